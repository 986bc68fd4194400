"""Curriculum learning by sample difficulty: pure maths, no Ray, no training loop.

Training samples are ordered easiest first (on MHIST: by annotator agreement, unanimous images first,
as in Wei et al. 2021, "Learn like a pathologist: curriculum learning by annotator agreement for
histopathology image classification"; without annotations: by the teacher's loss on each sample). In
epoch e (0-based) of E, a pacing function gives the share g(e) in [start, 1] of the ordered set used:
the easiest ceil(g(e) * N) samples, shuffled within the epoch.

With progress p = min(1, e / (full_at * E)) (the whole set is used from epoch full_at * E on):

    none         g = 1
    linear       g = start + (1 - start) * p
    root         g = sqrt(start^2 + (1 - start^2) * p)             (Platanios et al. 2019)
    step         g = start + (1 - start) * floor(STEPS * p) / STEPS  (STEPS = 4 equal steps)
    exponential  g = start ** (1 - p)                                (geometric growth; Hacohen & Weinshall 2019)

Each g is non-decreasing in e, equals `start` at e = 0 (1 for `none`) and 1 once p = 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

__all__ = ["PACING", "STEPS", "curriculum_order", "epoch_subset", "pacing_fraction", "teacher_difficulty"]

STEPS = 4

PACING: dict[str, Callable[[float, float], float]] = {
    "none": lambda p, start: 1.0,
    "linear": lambda p, start: start + (1.0 - start) * p,
    "root": lambda p, start: math.sqrt(start * start + (1.0 - start * start) * p),
    "step": lambda p, start: start + (1.0 - start) * math.floor(STEPS * p + 1e-9) / STEPS,
    "exponential": lambda p, start: start ** (1.0 - p),
}


def pacing_fraction(pacing: str, epoch: int, epochs: int, start: float, full_at: float = 0.5) -> float:
    """g(epoch): the share of the ordered training set used in 0-based `epoch` of `epochs`.

    Args:
        pacing: a key of `PACING`.
        epoch: 0-based epoch index.
        epochs: total number of epochs E >= 1.
        start: g at epoch 0, in (0, 1].
        full_at: fraction of E after which the whole set is used, in (0, 1].
    Returns:
        A float in [start, 1] (exactly 1 for `none` and from epoch full_at * E on).
    """
    if pacing not in PACING:
        raise ValueError(f"unknown pacing {pacing!r}; available: {', '.join(PACING)}")
    if not 0.0 < start <= 1.0 or not 0.0 < full_at <= 1.0:
        raise ValueError(f"start and full_at must lie in (0, 1], got start={start}, full_at={full_at}")
    p = min(1.0, epoch / max(full_at * epochs, 1e-9))
    return float(min(1.0, max(start if pacing != "none" else 1.0, PACING[pacing](p, start))))


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


def epoch_subset(order: torch.Tensor, fraction: float) -> torch.Tensor:
    """The easiest ceil(fraction * N) indices of `order` (at least one)."""
    n = max(1, math.ceil(fraction * len(order) - 1e-9))
    return order[:n]


def teacher_difficulty(teacher_logits: np.ndarray, subclass: np.ndarray) -> np.ndarray:
    """Difficulty from the teacher when no annotations grade the samples: its cross-entropy on the true
    subclass of each sample, -log softmax(t)_s, shape (N,)."""
    t = torch.as_tensor(np.asarray(teacher_logits, dtype=np.float32))
    s = torch.as_tensor(np.asarray(subclass, dtype=np.int64))
    return torch.nn.functional.cross_entropy(t, s, reduction="none").numpy()
