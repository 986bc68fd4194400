"""Image augmentation as tensor ops on the batch's own device (no DataLoader, no PIL).

For histology, orientation carries no meaning: random horizontal and vertical flips and 90-degree
rotations (square images), plus mild colour jitter (brightness, contrast, saturation, each a factor in
[1 - j, 1 + j], j = 0.1) for RGB. Inputs and outputs are (B, C, H, W) floats in [0, 1]; every sample
draws its own transform from `generator`, which lives on the batch's device.
"""

from __future__ import annotations

import torch

__all__ = ["augment_images"]


def _per_sample(generator: torch.Generator, n: int, device) -> torch.Tensor:
    return torch.rand(n, device=device, generator=generator)


def augment_images(x: torch.Tensor, generator: torch.Generator, jitter: float = 0.1) -> torch.Tensor:
    """Randomly flipped, rotated (by k * 90 degrees) and colour-jittered copy of the batch `x`."""
    b, c, h, w = x.shape
    dev = x.device
    flip_h = (_per_sample(generator, b, dev) < 0.5).view(b, 1, 1, 1)
    x = torch.where(flip_h, x.flip(3), x)
    flip_v = (_per_sample(generator, b, dev) < 0.5).view(b, 1, 1, 1)
    x = torch.where(flip_v, x.flip(2), x)
    if h == w:  # a 90-degree turn keeps the shape only for square images
        turn = (_per_sample(generator, b, dev) < 0.5).view(b, 1, 1, 1)
        x = torch.where(turn, x.transpose(2, 3), x)  # with the flips above: all 8 symmetries of the square
    if c == 3 and jitter > 0:

        def factor():
            return (1.0 + jitter * (2 * _per_sample(generator, b, dev) - 1)).view(b, 1, 1, 1)

        x = x * factor()  # brightness
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * factor() + mean  # contrast
        grey = 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
        x = (x - grey) * factor() + grey  # saturation
        x = x.clamp_(0.0, 1.0)
    return x
