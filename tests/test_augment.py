"""Augmentation on the device: shapes and ranges kept, seeded, and flips/turns only permute pixels."""

from __future__ import annotations

import torch

from skd_tune.augment import augment_images


def _batch(c=3, h=8, w=8, b=16):
    return torch.rand(b, c, h, w, generator=torch.Generator().manual_seed(0))


def test_shape_range_and_determinism():
    x = _batch()
    a = augment_images(x, torch.Generator().manual_seed(1))
    b = augment_images(x, torch.Generator().manual_seed(1))
    c = augment_images(x, torch.Generator().manual_seed(2))
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_without_jitter_only_the_symmetries_of_the_square():
    x = _batch()
    y = augment_images(x, torch.Generator().manual_seed(3), jitter=0.0)
    for xi, yi in zip(x, y):
        candidates = []
        for t in (xi, xi.transpose(1, 2)):
            for f in (lambda z: z, lambda z: z.flip(1), lambda z: z.flip(2), lambda z: z.flip(1).flip(2)):
                candidates.append(f(t))
        assert any(torch.equal(yi, c) for c in candidates)
    assert not torch.equal(x, y)  # 16 samples: some were transformed


def test_non_square_images_are_not_turned_and_grey_is_not_jittered_in_colour():
    x = _batch(c=1, h=4, w=6)
    y = augment_images(x, torch.Generator().manual_seed(0))
    assert y.shape == x.shape
    assert torch.allclose(y.sum(dim=(1, 2, 3)), x.sum(dim=(1, 2, 3)))  # one channel: flips only
