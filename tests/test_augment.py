"""Augmentation on the device: shapes and ranges kept, seeded, flips/turns only permute pixels, and the
view each sample was given is the view `apply_view` computes."""

from __future__ import annotations

import pytest
import torch

from skd_tune.augment import VIEWS, apply_view, augment_images, num_views


def _batch(c=3, h=8, w=8, b=16):
    return torch.rand(b, c, h, w, generator=torch.Generator().manual_seed(0))


def test_shape_range_and_determinism():
    x = _batch()
    a, va = augment_images(x, torch.Generator().manual_seed(1))
    b, vb = augment_images(x, torch.Generator().manual_seed(1))
    c, _ = augment_images(x, torch.Generator().manual_seed(2))
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, b) and torch.equal(va, vb) and not torch.equal(a, c)
    assert va.shape == (16,) and va.dtype == torch.int64


def test_without_jitter_only_the_symmetries_of_the_square():
    x = _batch()
    y, _ = augment_images(x, torch.Generator().manual_seed(3), jitter=0.0)
    for xi, yi in zip(x, y):
        candidates = []
        for t in (xi, xi.transpose(1, 2)):
            for f in (lambda z: z, lambda z: z.flip(1), lambda z: z.flip(2), lambda z: z.flip(1).flip(2)):
                candidates.append(f(t))
        assert any(torch.equal(yi, c) for c in candidates)
    assert not torch.equal(x, y)  # 16 samples: some were transformed


def test_the_returned_view_is_the_transform_each_sample_got():
    x = _batch(b=64)
    y, view = augment_images(x, torch.Generator().manual_seed(4), jitter=0.0)
    assert set(view.tolist()) == set(range(VIEWS))  # 64 samples: every view drawn
    for i in range(len(x)):
        assert torch.equal(y[i : i + 1], apply_view(x[i : i + 1], int(view[i])))


def test_the_eight_views_are_distinct_and_view_0_is_the_image():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    views = [apply_view(x, v) for v in range(VIEWS)]
    assert torch.equal(views[0], x)
    assert len({tuple(v.flatten().tolist()) for v in views}) == VIEWS


def test_non_square_images_are_not_turned_and_grey_is_not_jittered_in_colour():
    x = _batch(c=1, h=4, w=6)
    y, view = augment_images(x, torch.Generator().manual_seed(0))
    assert y.shape == x.shape
    assert torch.allclose(y.sum(dim=(1, 2, 3)), x.sum(dim=(1, 2, 3)))  # one channel: flips only
    assert num_views(4, 6) == 4 and int(view.max()) < 4
    with pytest.raises(ValueError, match=r"view must be in 0..3 for \(4, 6\) images"):
        apply_view(x, 4)
