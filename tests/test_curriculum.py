"""Curriculum maths: a property suite every pacing function passes given a level structure, the formulas
at chosen epochs, the ordering, the difficulty levels (whole levels for `levels`, quantiles of a
continuous difficulty), the per-epoch subsets that training really uses, and the spec's `levels`."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from skd_tune import names
from skd_tune.curriculum import (
    LOSS_LEVELS,
    PACING,
    STEPS,
    curriculum_order,
    epoch_size,
    epoch_subset,
    level_ends,
    pacing_fraction,
    quantile_levels,
    teacher_difficulty,
)
from skd_tune.models import build_model
from skd_tune.spec import validate_spec
from skd_tune.train import Curriculum, DeviceSplit, fit, make_optimizer, membership_for

from .conftest import TINY_SPEC, deep_update

# Level structures (cumulative counts c_1..c_L, c_L = N): one level, two, MHIST-like four unequal ones,
# and one sample per level (a continuous difficulty).
LEVEL_ENDS = [(50,), (10, 50), (5, 20, 32, 50), tuple(range(1, 51))]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _first_share(pacing: str, start: float, ends: tuple[int, ...]) -> float:
    return {"none": 1.0, "levels": ends[0] / ends[-1]}.get(pacing, start)


@pytest.mark.parametrize("pacing", list(PACING))
@pytest.mark.parametrize("start", [0.1, 0.5, 1.0])
@pytest.mark.parametrize("full_at", [0.3, 0.5, 1.0])
@pytest.mark.parametrize("ends", LEVEL_ENDS, ids=lambda e: f"L{len(e)}")
def test_pacing_properties(pacing, start, full_at, ends):
    epochs, n = 20, ends[-1]
    g = [pacing_fraction(pacing, e, epochs, start, full_at, ends) for e in range(epochs)]
    sizes = [epoch_size(pacing, e, epochs, start, full_at, ends) for e in range(epochs)]
    first = _first_share(pacing, start, ends)
    assert g[0] == pytest.approx(first)  # the first share: start, 1 for none, the easiest level for levels
    assert all(first - 1e-12 <= v <= 1.0 for v in g)
    if pacing not in ("none", "levels"):
        assert all(v >= start - 1e-12 for v in g)
    assert all(b >= a - 1e-12 for a, b in zip(g, g[1:]))  # never shrinks
    assert all(b >= a for a, b in zip(sizes, sizes[1:]))
    assert all(1 <= s <= n and s == math.ceil(v * n - 1e-9) for s, v in zip(sizes, g))
    full_from = math.ceil(full_at * epochs - 1e-9)  # 0.3 * 20 = 6.000000000000001: epoch 6 on
    assert all(v == 1.0 for v in g[full_from:]) and all(s == n for s in sizes[full_from:])  # whole set
    if full_from < epochs and full_from > 0 and pacing != "none" and first < 1:
        assert g[full_from - 1] < 1  # and not before


@pytest.mark.parametrize(
    "pacing,expected",
    [
        # E = 10, full_at = 0.5 -> p = e / 5; start = 0.2; epoch e = 2 -> p = 0.4
        ("none", 1.0),
        ("linear", 0.2 + 0.8 * 0.4),
        ("root", math.sqrt(0.04 + 0.96 * 0.4)),
        ("step", 0.2 + 0.8 * math.floor(STEPS * 0.4) / STEPS),
        ("exponential", 0.2**0.6),
        # ends (5, 20, 32, 50): k = 1 + floor(0.4 * 3) = 2 levels -> 20 / 50
        ("levels", 20 / 50),
    ],
)
def test_pacing_formulas(pacing, expected):
    assert pacing_fraction(pacing, 2, 10, 0.2, 0.5, (5, 20, 32, 50)) == pytest.approx(expected)


def test_pacing_rejects_bad_arguments():
    with pytest.raises(ValueError, match=r"unknown pacing 'cosine'; available: none, linear"):
        pacing_fraction("cosine", 0, 10, 0.5)
    with pytest.raises(ValueError, match=r"start and full_at must lie in \(0, 1\]"):
        pacing_fraction("linear", 0, 10, 0.0)
    with pytest.raises(ValueError, match=r"pacing 'levels' needs level_ends"):
        pacing_fraction("levels", 0, 10, 0.5)
    with pytest.raises(ValueError, match=r"level_ends must be increasing positive counts"):
        epoch_size("levels", 0, 10, 0.5, 0.5, (5, 5, 10))


def test_registry_is_the_spec_s_closed_set():
    assert list(PACING) == list(names.PACINGS) and "levels" in PACING


@pytest.mark.parametrize("levels,epochs,full_at", [(4, 20, 0.6), (4, 7, 0.5), (3, 10, 1.0), (7, 12, 0.5)])
def test_levels_admits_whole_levels_most_agreed_first_one_more_per_stage(levels, epochs, full_at):
    """On MHIST-like agreement (7 - a) / 3, unequal level sizes: every epoch's subset is exactly the k(e)
    easiest levels, k(e) = 1 + floor(p (L - 1)), with stages of equal length in p."""
    rng = np.random.default_rng(levels)
    agreement = 7 - rng.choice(levels, size=60, p=np.arange(levels, 0, -1) / sum(range(1, levels + 1)))
    difficulty = ((7 - agreement) / 3.0).astype(np.float32)
    order = curriculum_order(difficulty, seed=3)
    ends = level_ends(difficulty, order)
    values = np.unique(difficulty)  # the distinct levels, easiest (most agreed) first
    assert len(ends) == len(values) == levels
    assert list(ends) == list(np.cumsum([(difficulty == v).sum() for v in values]))
    ks = []
    for e in range(epochs):
        n = epoch_size("levels", e, epochs, 0.5, full_at, ends)
        k = ends.index(n) + 1  # the subset ends on a level boundary
        subset = set(order[:n].tolist())
        assert subset == set(np.flatnonzero(np.isin(difficulty, values[:k])).tolist())  # whole levels, easiest
        p = min(1.0, e / (full_at * epochs))
        assert k == 1 + math.floor(p * (levels - 1) + 1e-9)
        ks.append(k)
    assert ks[0] == 1 and all(0 <= b - a for a, b in zip(ks, ks[1:]))
    # stage j starts at the first epoch e >= j * full_at * E / (L - 1)
    for j in range(1, levels):
        starts = [e for e in range(epochs) if ks[e] == j + 1 and (e == 0 or ks[e - 1] <= j)]
        edge = j * full_at * epochs / (levels - 1)
        if edge <= epochs - 1 + 1e-9 and full_at * epochs / (levels - 1) >= 1:  # a stage of >= 1 epoch
            assert starts == [math.ceil(edge - 1e-9)]
    if full_at < 1:
        assert ks[-1] == levels
    else:  # full_at = 1: the hardest level would come at epoch E, after training
        assert ks[-1] == levels - 1


def test_levels_limiting_cases():
    assert [epoch_size("levels", e, 5, 0.3, 0.5, (9,)) for e in range(5)] == [9] * 5  # L = 1: the whole set
    assert [epoch_size("levels", e, 6, 0.3, 0.5, (4, 9)) for e in range(6)] == [4, 4, 4, 9, 9, 9]  # L = 2
    # one sample per level: one more sample per stage step, the whole set at full_at * E
    ends = tuple(range(1, 7))
    assert [epoch_size("levels", e, 10, 0.3, 0.5, ends) for e in range(10)] == [1, 2, 3, 4, 5, 6, 6, 6, 6, 6]


def test_level_ends():
    difficulty = np.array([2, 0, 1, 0, 2, 0, 1], dtype=float)
    order = curriculum_order(difficulty, seed=0)
    assert level_ends(difficulty, order) == (3, 5, 7)
    assert level_ends(np.zeros(4), np.arange(4)) == (4,)
    with pytest.raises(ValueError, match="does not sort"):
        level_ends(difficulty, np.arange(7))


def test_quantile_levels_of_a_continuous_difficulty():
    rng = np.random.default_rng(0)
    loss = rng.exponential(size=40)
    lv = quantile_levels(loss)
    assert LOSS_LEVELS == 4 and lv.dtype == np.int64
    assert np.bincount(lv).tolist() == [10, 10, 10, 10]  # quartiles
    by_loss = np.argsort(loss)
    assert (np.diff(lv[by_loss]) >= 0).all()  # monotone: a lower loss is never a harder level
    assert lv[by_loss[:10]].tolist() == [0] * 10 and lv[by_loss[-10:]].tolist() == [3] * 10
    # ties share a level; fewer distinct values than levels -> fewer levels
    tied = np.array([0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 2.0, 3.0])
    lv = quantile_levels(tied)
    assert len(set(lv[:6].tolist())) == 1 and lv[0] < lv[6] <= lv[7]
    assert quantile_levels(np.array([1.0, 1.0, 1.0])).tolist() == [0, 0, 0]
    assert quantile_levels(loss, 1).tolist() == [0] * 40
    # the levels of the binned difficulty: 4 whole quartiles of 10 samples
    assert level_ends(quantile_levels(loss), curriculum_order(quantile_levels(loss), 0)) == (10, 20, 30, 40)
    with pytest.raises(ValueError, match="finite"):
        quantile_levels(np.array([0.1, np.nan]))


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
    assert epoch_subset(order, 0.3).tolist() == [0, 1, 2]  # 0.3 * 10 is 3.0000000000000004
    assert epoch_subset(order, 1.0).tolist() == list(range(10))
    assert epoch_subset(order, 1e-6).tolist() == [0]
    assert epoch_size("levels", 0, 10, 0.5, 0.5, (1, 49, 10_000_019)) == 1
    assert epoch_size("levels", 3, 10, 0.5, 0.5, (1, 49, 10_000_019)) == 49  # c_k exactly, no float slip


def test_teacher_difficulty_is_the_teachers_loss():
    logits = np.array([[5.0, 0.0], [0.0, 5.0], [0.0, 0.0]], dtype=np.float32)
    d = teacher_difficulty(logits, np.array([0, 0, 1]))
    assert d[0] < d[2] < d[1]
    assert d[2] == pytest.approx(math.log(2), rel=1e-5)


def _fit_seen(pacing: str, difficulty: np.ndarray, epochs: int, start: float, full_at: float):
    """Run `fit` on a tiny split with a curriculum over `difficulty`; yield (epoch metrics, the indices
    that epoch's batches used, the order, the level ends)."""
    rng = np.random.default_rng(0)
    n = len(difficulty)
    x = rng.integers(0, 255, size=(n, 4)).astype(np.uint8)
    sub = rng.integers(0, 4, size=n)
    s2c = np.array([0, 0, 1, 1])
    train = DeviceSplit.from_numpy(x, sub, s2c, 1 / 255, "cpu")
    order = curriculum_order(difficulty, seed=1)
    ends = level_ends(difficulty, order)
    model = build_model("mlp_tiny", 4, (4,), [0.5] * 4, [0.3] * 4)
    seen: list[set[int]] = []

    def loss_fn(out, idx, *_):  # *_: whatever else train_one_epoch passes (the augmentation's view)
        seen[-1].update(idx.tolist())
        loss = torch.nn.functional.cross_entropy(out, train.subclass[idx])
        return loss, {}

    curriculum = Curriculum(pacing, start, full_at, torch.from_numpy(order), ends)
    # fit trains epoch e when asked for its metrics: record the indices each epoch's batches used
    gen = fit(
        model, make_optimizer(model, 1e-3, 0), loss_fn, train, train, membership_for(s2c, "cpu"), 1, epochs, n, 0,
        curriculum=curriculum,
    )  # fmt: skip
    for _ in range(epochs):
        seen.append(set())
        metrics = next(gen)
        yield metrics, seen[-1], order, ends


@pytest.mark.parametrize("pacing", ["linear", "root", "step", "exponential"])
def test_training_uses_the_paced_subset_each_epoch(pacing):
    """The indices trained on in epoch e are exactly the easiest ceil(g(e) N) of the order."""
    n, epochs, start = 40, 6, 0.25
    difficulty = np.random.default_rng(0).random(n)
    for e, (metrics, seen, order, _) in enumerate(_fit_seen(pacing, difficulty, epochs, start, 0.5)):
        size = math.ceil(pacing_fraction(pacing, e, epochs, start, 0.5) * n - 1e-9)
        assert metrics["train_share"] == pytest.approx(size / n)
        assert seen == set(order[:size].tolist())


def test_training_with_levels_uses_whole_agreement_levels():
    """MHIST-like agreement, 4 levels: E = 6, full_at = 0.5 -> p = e / 3, k = 1 + floor(p * 3) = 1, 2, 3,
    4, 4, 4 levels; epoch e trains on exactly the samples of those levels, the most agreed first."""
    agreement = np.repeat([7, 6, 5, 4], [12, 10, 8, 6])
    agreement = agreement[np.random.default_rng(2).permutation(len(agreement))]
    difficulty = ((7 - agreement) / 3.0).astype(np.float32)
    admitted = [1, 2, 3, 4, 4, 4]
    for e, (metrics, seen, _, ends) in enumerate(_fit_seen("levels", difficulty, 6, 0.9, 0.5)):
        expected = set(np.flatnonzero(agreement > 7 - admitted[e]).tolist())
        assert seen == expected and ends == (12, 22, 30, 36)
        assert metrics["train_share"] == pytest.approx(len(expected) / 36)


def test_curriculum_level_ends_must_cover_the_order():
    with pytest.raises(ValueError, match="level_ends must end at the 5 ordered samples"):
        Curriculum("levels", 0.5, 0.5, torch.arange(5), (2, 4))


def test_spec_accepts_levels_and_a_search_choice_with_it():
    spec = validate_spec(
        deep_update(
            TINY_SPEC,
            {
                "teacher": {"curriculum": {"pacing": "levels"}},
                "student": {"curriculum": {"pacing": "levels", "full_at": 0.6}},
                "search": {"space": {"curriculum.pacing": {"choice": ["none", "linear", "levels"]}}},
            },
        )
    )
    assert spec.teacher.curriculum.pacing == "levels" and spec.student.curriculum.pacing == "levels"
    assert spec.search.space["curriculum.pacing"].choice == ["none", "linear", "levels"]
    assert spec.student_for({"curriculum.pacing": "levels"}).curriculum.pacing == "levels"
