"""Curriculum maths: a property suite every pacing function passes, the formulas at chosen epochs, the
ordering, and the per-epoch subsets that training really uses."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from skd_tune.curriculum import PACING, STEPS, curriculum_order, epoch_subset, pacing_fraction, teacher_difficulty
from skd_tune.models import build_model
from skd_tune.train import Curriculum, DeviceSplit, fit, make_optimizer, membership_for


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.mark.parametrize("pacing", list(PACING))
@pytest.mark.parametrize("start", [0.1, 0.5, 1.0])
@pytest.mark.parametrize("full_at", [0.3, 0.5, 1.0])
def test_pacing_properties(pacing, start, full_at):
    epochs = 20
    g = [pacing_fraction(pacing, e, epochs, start, full_at) for e in range(epochs)]
    assert all(start - 1e-12 <= v <= 1.0 for v in g)
    assert all(b >= a - 1e-12 for a, b in zip(g, g[1:]))  # never shrinks
    assert g[0] == pytest.approx(1.0 if pacing == "none" else start)
    full_from = math.ceil(full_at * epochs)
    assert all(v == pytest.approx(1.0) for v in g[full_from:])  # whole set from epoch full_at * E on


@pytest.mark.parametrize(
    "pacing,expected",
    [
        # E = 10, full_at = 0.5 -> p = e / 5; start = 0.2; epoch e = 2 -> p = 0.4
        ("none", 1.0),
        ("linear", 0.2 + 0.8 * 0.4),
        ("root", math.sqrt(0.04 + 0.96 * 0.4)),
        ("step", 0.2 + 0.8 * math.floor(STEPS * 0.4) / STEPS),
        ("exponential", 0.2**0.6),
    ],
)
def test_pacing_formulas(pacing, expected):
    assert pacing_fraction(pacing, 2, 10, 0.2, 0.5) == pytest.approx(expected)


def test_pacing_rejects_bad_arguments():
    with pytest.raises(ValueError, match=r"unknown pacing 'cosine'; available: none, linear"):
        pacing_fraction("cosine", 0, 10, 0.5)
    with pytest.raises(ValueError, match=r"start and full_at must lie in \(0, 1\]"):
        pacing_fraction("linear", 0, 10, 0.0)


def test_order_easiest_first_with_seeded_ties():
    difficulty = np.array([2, 0, 1, 0, 2, 0, 1], dtype=float)
    a = curriculum_order(difficulty, seed=0)
    assert sorted(a.tolist()) == list(range(7))
    assert (np.diff(difficulty[a]) >= 0).all()
    assert (a == curriculum_order(difficulty, seed=0)).all()
    orders = {tuple(curriculum_order(difficulty, seed=s)) for s in range(10)}
    assert len(orders) > 1  # ties are broken differently by different seeds
    assert all(set(o[:3]) == {1, 3, 5} for o in orders)


def test_epoch_subset_sizes():
    order = torch.arange(10)
    assert epoch_subset(order, 0.25).tolist() == [0, 1, 2]
    assert epoch_subset(order, 1.0).tolist() == list(range(10))
    assert epoch_subset(order, 1e-6).tolist() == [0]


def test_teacher_difficulty_is_the_teachers_loss():
    logits = np.array([[5.0, 0.0], [0.0, 5.0], [0.0, 0.0]], dtype=np.float32)
    d = teacher_difficulty(logits, np.array([0, 0, 1]))
    assert d[0] < d[2] < d[1]
    assert d[2] == pytest.approx(math.log(2), rel=1e-5)


@pytest.mark.parametrize("pacing", ["linear", "root", "step", "exponential"])
def test_training_uses_the_paced_subset_each_epoch(pacing):
    """The indices trained on in epoch e are exactly the easiest ceil(g(e) N) of the order."""
    rng = np.random.default_rng(0)
    n, epochs, start = 40, 6, 0.25
    x = rng.integers(0, 255, size=(n, 4)).astype(np.uint8)
    sub = rng.integers(0, 4, size=n)
    s2c = np.array([0, 0, 1, 1])
    train = DeviceSplit.from_numpy(x, sub, s2c, 1 / 255, "cpu")
    order = torch.from_numpy(curriculum_order(rng.random(n), seed=1))
    model = build_model("mlp_tiny", 4, (4,), [0.5] * 4, [0.3] * 4)
    seen: list[set[int]] = []

    def loss_fn(out, idx):
        seen[-1].update(idx.tolist())
        loss = torch.nn.functional.cross_entropy(out, train.subclass[idx])
        return loss, {}

    membership = membership_for(s2c, "cpu")
    curriculum = Curriculum(pacing, start, 0.5, order)
    # fit trains epoch e when asked for its metrics: record the indices each epoch's batches used
    gen = fit(
        model, make_optimizer(model, 1e-3, 0), loss_fn, train, train, membership, 1, epochs, n, 0, curriculum=curriculum
    )
    for e in range(epochs):
        seen.append(set())
        metrics = next(gen)
        share = pacing_fraction(pacing, e, epochs, start, 0.5)
        assert metrics["train_share"] == pytest.approx(share)
        assert seen[-1] == set(order[: math.ceil(share * n - 1e-9)].tolist())
