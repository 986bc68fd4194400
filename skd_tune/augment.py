"""Image augmentation as tensor ops on the batch's own device (no DataLoader, no PIL).

For histology, orientation carries no meaning: random horizontal and vertical flips and 90-degree
rotations (square images), plus mild colour jitter (brightness, contrast, saturation, each a factor in
[1 - j, 1 + j], j = 0.1) for RGB. Inputs and outputs are (B, C, H, W) floats in [0, 1]; every sample
draws its own transform from `generator`, which lives on the batch's device.

The flips and turns form the dihedral group of the square: 8 exact *views* of an image, numbered

    view v = h + 2 v' + 4 t     h: flip left-right (dim 3), v': flip up-down (dim 2), t: transpose,

applied in that order (`apply_view`). `augment_images` returns the view it gave each sample, so a
student can distil the teacher's logits of that very view (`teacher_logits: views`). The colour
jitter is not a view: the teacher's logits are those of the un-jittered view.
"""

from __future__ import annotations

import torch

__all__ = ["VIEWS", "apply_view", "augment_images", "num_views"]

VIEWS = 8  # flips x flips x transpose


def num_views(height: int, width: int) -> int:
    """8 for square images; 4 (the flips) otherwise, where a turn would change the shape."""
    return VIEWS if height == width else VIEWS // 2


def apply_view(x: torch.Tensor, view: int) -> torch.Tensor:
    """View `view` (0..7, see the module docstring) of every image of the batch `x` (B, C, H, W)."""
    if not 0 <= view < num_views(x.shape[2], x.shape[3]):
        raise ValueError(f"view must be in 0..{num_views(x.shape[2], x.shape[3]) - 1} for {tuple(x.shape[2:])} images")
    if view & 1:
        x = x.flip(3)
    if view & 2:
        x = x.flip(2)
    if view & 4:
        x = x.transpose(2, 3)
    return x


def _per_sample(generator: torch.Generator, n: int, device) -> torch.Tensor:
    return torch.rand(n, device=device, generator=generator)


def augment_images(
    x: torch.Tensor, generator: torch.Generator, jitter: float = 0.1
) -> tuple[torch.Tensor, torch.Tensor]:
    """A randomly flipped, turned (by k * 90 degrees) and colour-jittered copy of the batch `x`, and the
    view (B,) int64 each sample was given (`apply_view(x[i:i+1], view[i])` is its image before jitter)."""
    b, c, h, w = x.shape
    dev = x.device
    flip_h = _per_sample(generator, b, dev) < 0.5
    x = torch.where(flip_h.view(b, 1, 1, 1), x.flip(3), x)
    flip_v = _per_sample(generator, b, dev) < 0.5
    x = torch.where(flip_v.view(b, 1, 1, 1), x.flip(2), x)
    view = flip_h.long() + 2 * flip_v.long()
    if h == w:  # a 90-degree turn keeps the shape only for square images
        turn = _per_sample(generator, b, dev) < 0.5
        x = torch.where(turn.view(b, 1, 1, 1), x.transpose(2, 3), x)  # with the flips: all 8 symmetries
        view = view + 4 * turn.long()
    if c == 3 and jitter > 0:

        def factor():
            return (1.0 + jitter * (2 * _per_sample(generator, b, dev) - 1)).view(b, 1, 1, 1)

        x = x * factor()  # brightness
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * factor() + mean  # contrast
        grey = 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
        x = (x - grey) * factor() + grey  # saturation
        x = x.clamp_(0.0, 1.0)
    return x, view
