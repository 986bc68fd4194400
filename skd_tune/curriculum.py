"""Curriculum learning by sample difficulty: pure maths, no Ray, no training loop.

Training samples are ordered easiest first (on MHIST: by annotator agreement, unanimous images first,
as in Wei et al. 2021, "Learn like a pathologist: curriculum learning by annotator agreement for
histopathology image classification"; without annotations: by the teacher's loss on each sample). In
epoch e (0-based) of E, a pacing function gives the share g(e) of the ordered set of N samples used:
the easiest n(e) = ceil(g(e) * N) of them, shuffled within the epoch (`epoch_size`).

The samples fall into L difficulty *levels*: the runs of equal difficulty in the order (on MHIST the 4
agreement levels 7/7, 6/7, 5/7, 4/7). `level_ends` = (c_1, ..., c_L), c_L = N, counts the ordered
samples up to the end of each level. With progress p = min(1, e / (full_at * E)) (p = 1, the whole set,
from epoch full_at * E on):

    none         g = 1
    linear       g = start + (1 - start) * p
    root         g = sqrt(start^2 + (1 - start^2) * p)             (Platanios et al. 2019)
    step         g = start + (1 - start) * floor(STEPS * p) / STEPS  (STEPS = 4 equal steps)
    exponential  g = start ** (1 - p)                                (geometric growth; Hacohen & Weinshall 2019)
    levels       g = c_k / N,  k = 1 + floor(p * (L - 1))            (Wei et al. 2021: one level per stage)

`levels` admits the easiest level at epoch 0 and one more level per stage, L - 1 stages of equal length
full_at * E / (L - 1) epochs, so its subset is always whole levels, the most agreed first: n(e) = c_k
exactly, never a cut inside a level (the other pacings cut anywhere, ties in random order). `start`
does not apply to `levels` (its first share is c_1 / N, the easiest level's). Limiting cases: L = 1
(all samples equally difficult): the whole set every epoch; L = 2: the easy level alone until
full_at * E, then everything (a one-step `step`); full_at = 1: p reaches 1 only at epoch E, after the
last epoch, so the hardest level is never trained on (the last epoch has L - 1 levels when E >= L - 1;
likewise the other pacings never reach g = 1); a continuous difficulty (the teacher's loss) would have
one level per sample (N - 1 stages), so for `levels` it is first binned into LOSS_LEVELS quantile levels
(`quantile_levels`, in recipes.build_student_run); annotations are used as they are.

Each g is non-decreasing in e, equals its first share at e = 0 (`start`; 1 for `none`; c_1 / N for
`levels`) and 1 once p = 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

__all__ = [
    "LOSS_LEVELS",
    "PACING",
    "STEPS",
    "Pacing",
    "curriculum_order",
    "epoch_size",
    "epoch_subset",
    "level_ends",
    "pacing_fraction",
    "quantile_levels",
    "teacher_difficulty",
]

STEPS = 4
LOSS_LEVELS = 4  # quartiles of the teacher's loss: the levels of `levels` on data without annotations
_EPS = 1e-9  # float slack where an exact boundary (p = 1, a stage edge) is computed from a product

# g(p, start, level_ends) -> the share of the ordered set used at progress p in [0, 1]; `level_ends`
# (L,) int cumulative counts, level_ends[-1] = N (only `levels` reads it).
Pacing = Callable[[float, float, Sequence[int]], float]


def _levels(p: float, start: float, ends: Sequence[int]) -> float:
    """c_k / N with k = 1 + floor(p (L - 1)) admitted levels (`start` does not apply)."""
    k = 1 + math.floor(p * (len(ends) - 1) + _EPS)
    return ends[min(k, len(ends)) - 1] / ends[-1]


PACING: dict[str, Pacing] = {
    "none": lambda p, start, ends: 1.0,
    "linear": lambda p, start, ends: start + (1.0 - start) * p,
    "root": lambda p, start, ends: math.sqrt(start * start + (1.0 - start * start) * p),
    "step": lambda p, start, ends: start + (1.0 - start) * math.floor(STEPS * p + _EPS) / STEPS,
    "exponential": lambda p, start, ends: start ** (1.0 - p),
    "levels": _levels,
}


def _check_ends(ends: Sequence[int]) -> None:
    a = np.asarray(ends)
    if a.ndim != 1 or len(a) == 0 or a[0] < 1 or (np.diff(a) <= 0).any():
        raise ValueError(f"level_ends must be increasing positive counts, one per level; got {list(a)}")


def pacing_fraction(
    pacing: str,
    epoch: int,
    epochs: int,
    start: float,
    full_at: float = 0.5,
    level_ends: Sequence[int] | None = None,
) -> float:
    """g(epoch): the share of the ordered training set used in 0-based `epoch` of `epochs`.

    Args:
        pacing: a key of `PACING`.
        epoch: 0-based epoch index.
        epochs: total number of epochs E >= 1.
        start: g at epoch 0, in (0, 1] (not used by `levels`).
        full_at: fraction of E after which the whole set is used, in (0, 1].
        level_ends: (L,) cumulative counts of the ordered samples at the end of each difficulty level
            (`level_ends`); needed by `levels` only.
    Returns:
        A float in (0, 1]: at least `start` (exactly 1 for `none`; c_1 / N at epoch 0 for `levels`),
        exactly 1 from epoch full_at * E on.
    """
    if pacing not in PACING:
        raise ValueError(f"unknown pacing {pacing!r}; available: {', '.join(PACING)}")
    if not 0.0 < start <= 1.0 or not 0.0 < full_at <= 1.0:
        raise ValueError(f"start and full_at must lie in (0, 1], got start={start}, full_at={full_at}")
    if pacing == "levels" and level_ends is None:
        raise ValueError("pacing 'levels' needs level_ends (the cumulative count of each difficulty level)")
    if level_ends is not None:
        _check_ends(level_ends)
    full = full_at * epochs
    p = 1.0 if epoch >= full - _EPS else epoch / full  # 0.3 * 10 is 3.0000000000000004: epoch 3 is full
    g = PACING[pacing](p, start, level_ends if level_ends is not None else (1,))
    return float(min(1.0, max(start if pacing not in ("none", "levels") else 0.0, g)))


def _count(fraction: float, n: int) -> int:
    """ceil(fraction * n) in [1, n], with float slack relative to the product (exact for c_k / N * N)."""
    return max(1, min(n, math.ceil(fraction * n * (1.0 - 1e-12))))


def epoch_size(pacing: str, epoch: int, epochs: int, start: float, full_at: float, level_ends: Sequence[int]) -> int:
    """n(epoch): how many of the ordered samples (the easiest first) 0-based `epoch` of `epochs` trains on.

    Args:
        pacing, epoch, epochs, start, full_at: as `pacing_fraction`.
        level_ends: (L,) cumulative counts of the difficulty levels (`level_ends`), level_ends[-1] = N,
            the size of the ordered set; the pacings other than `levels` read N only.
    Returns:
        ceil(g(epoch) * N) in [1, N]; for `levels` exactly the level end c_k (whole levels only).
    """
    share = pacing_fraction(pacing, epoch, epochs, start, full_at, level_ends)
    return _count(share, int(level_ends[-1]))


def curriculum_order(difficulty: np.ndarray, seed: int) -> np.ndarray:
    """Indices of the samples, easiest (lowest difficulty) first; ties in random order drawn from `seed`.

    Args:
        difficulty: (N,) float, any scale, lower = easier.
    Returns:
        (N,) int64 permutation of arange(N).
    """
    difficulty = np.asarray(difficulty, dtype=np.float64)
    tie_break = np.random.default_rng(seed).permutation(len(difficulty))
    return np.lexsort((tie_break, difficulty)).astype(np.int64)


def level_ends(difficulty: np.ndarray, order: np.ndarray) -> tuple[int, ...]:
    """The difficulty levels of the ordered samples: cumulative counts (c_1, ..., c_L), c_L = N, of the
    samples `order` lists up to the end of each run of equal difficulty.

    Args:
        difficulty: (N,) per-sample difficulty; order: (N,) indices sorting it (`curriculum_order`).
    Returns:
        L increasing ints; MHIST's agreement: L = 4; a continuous difficulty: one level per distinct value.
    """
    d = np.asarray(difficulty, dtype=np.float64)[np.asarray(order)]
    if len(d) == 0:
        raise ValueError("no samples to order")
    steps = np.diff(d)
    if (steps < 0).any():
        raise ValueError("order does not sort the difficulty easiest first")
    return (*(int(i) + 1 for i in np.flatnonzero(steps > 0)), len(d))


def quantile_levels(difficulty: np.ndarray, levels: int = LOSS_LEVELS) -> np.ndarray:
    """Bin a continuous difficulty into `levels` quantile levels: level j of sample i is the number of
    inner quantiles q_{1/L}, ..., q_{(L-1)/L} of the difficulty that lie below d_i.

    Equal values share a level, so there are at most `levels` levels, of about N / L samples each (fewer
    levels where ties span a quantile; one level for `levels` = 1).

    Args:
        difficulty: (N,) float, lower = easier (e.g. the teacher's loss, `teacher_difficulty`).
        levels: L >= 1.
    Returns:
        (N,) int64 in [0, L), 0 = easiest; same order of difficulty as the input.
    """
    if levels < 1:
        raise ValueError(f"levels must be >= 1, got {levels}")
    d = np.asarray(difficulty, dtype=np.float64)
    if not np.isfinite(d).all():
        raise ValueError("difficulty must be finite to be binned into quantile levels")
    edges = np.quantile(d, np.arange(1, levels) / levels) if levels > 1 else np.empty(0)
    return np.searchsorted(edges, d, side="left").astype(np.int64)


def epoch_subset(order: torch.Tensor, fraction: float) -> torch.Tensor:
    """The easiest ceil(fraction * N) indices of `order` (at least one)."""
    return order[: _count(fraction, len(order))]


def teacher_difficulty(teacher_logits: np.ndarray, subclass: np.ndarray) -> np.ndarray:
    """Difficulty from the teacher when no annotations grade the samples: its cross-entropy on the true
    subclass of each sample, -log softmax(t)_s, shape (N,)."""
    t = torch.as_tensor(np.asarray(teacher_logits, dtype=np.float32))
    s = torch.as_tensor(np.asarray(subclass, dtype=np.int64))
    return torch.nn.functional.cross_entropy(t, s, reduction="none").numpy()
