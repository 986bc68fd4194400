"""The one way an image file becomes model input: shared by the MHIST loader (training) and
`skd-tune predict` (serving), so that a deployed model sees the pixels it was trained on."""

from __future__ import annotations

import os

import numpy as np

from ..errors import first_line

__all__ = ["decode_image"]


def decode_image(path: str | os.PathLike, size: int | tuple[int, int], channels: int = 3) -> np.ndarray:
    """The image at `path` as uint8 (channels, H, W): converted to RGB (`channels` 3) or L (1), and
    resized (bilinear) to `size`, an int for a square or (H, W), where its size differs.

    Raises `ValueError` with the first line of the cause when the file is not a readable image; the
    caller turns it into its own message (which file, and what to do).
    """
    from PIL import Image  # loads lazily: `skd-tune predict` on arrays starts faster without it

    if channels not in (1, 3):
        raise ValueError(f"an image file holds 1 (L) or 3 (RGB) channels, not {channels}")
    h, w = (size, size) if isinstance(size, int) else size
    try:
        with Image.open(path) as im:
            im = im.convert("L" if channels == 1 else "RGB")
            if im.size != (w, h):
                im = im.resize((w, h), Image.Resampling.BILINEAR)
            arr = np.asarray(im, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise ValueError(first_line(e)) from e
    return arr[None] if channels == 1 else arr.transpose(2, 0, 1)
