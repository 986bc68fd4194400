"""The Pareto front of a multi-objective student search (`search.objectives`), from its trials table.

Definitions (pure pandas/numpy, no Ray; the student stage writes the front to `results/pareto.parquet`,
status and the report read it):

- An objective is a (metric, mode) pair, mode `max` or `min`. Its column in the trials table is
  `best_<metric>` for a validation metric (`names.METRICS`: the value at the trial's best epoch by the
  search metric, the epoch whose weights the trial's checkpoint carries and export writes out) and the
  metric itself for a cost (`names.COST_METRICS`: measured once per trial).
- A trial is finished when its status is TERMINATED and it reported all its epochs (`epochs >=
  max_epochs`). ASHA decides on the first objective alone, so a trial it stopped early may be cheap but
  was never trained to the end: it is not on the front, nor is a running, errored or unrecorded one
  (unknown `max_epochs`), nor one without a finite value of every objective (a missing column counts as
  no value).
- Trial a dominates trial b when a is no worse than b in every objective and strictly better in at
  least one. The front is the finished trials that no finished trial dominates; trials equal in every
  objective do not dominate each other, so ties are all kept. Assumes exact comparisons of the stored
  values (no tolerance: two F1 values that differ in the 10th decimal are different).
- The front is sorted by the objectives after the first (ascending values: the cheapest first when
  they are costs), then by the first objective (best first), then by trial id.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from .names import METRICS

__all__ = [
    "describe_front",
    "dominated",
    "eligible",
    "finished",
    "format_objective",
    "missing_columns",
    "non_dominated",
    "objective_column",
    "pareto_front",
]

# At most this many booleans in one block of the pairwise comparison (memory, not speed).
_BLOCK_CELLS = 1 << 24


def objective_column(metric: str) -> str:
    """The trials-table column of an objective: `best_<metric>` for a validation metric, else `metric`."""
    return f"best_{metric}" if metric in METRICS else metric


def _pairs(objectives: Iterable[Any]) -> list[tuple[str, str]]:
    """(metric, mode) pairs from (metric, mode) tuples or objects with `.metric` and `.mode` (spec.Objective)."""
    out = []
    for o in objectives:
        metric, mode = (o.metric, o.mode) if hasattr(o, "metric") else o
        if mode not in ("max", "min"):
            raise ValueError(f"objective {metric}: mode must be 'max' or 'min', got {mode!r}")
        out.append((str(metric), str(mode)))
    return out


def missing_columns(trials: pd.DataFrame | None, objectives: Iterable[Any]) -> list[str]:
    """The objectives' columns the trials table does not have (e.g. costs before any trial measured them)."""
    cols = set() if trials is None else set(trials.columns)
    return [c for c in (objective_column(m) for m, _ in _pairs(objectives)) if c not in cols]


def non_dominated(values: np.ndarray, modes: Sequence[str]) -> np.ndarray:
    """Boolean mask of the rows of `values` (n x k, finite) that no other row dominates, the k columns
    optimised in `modes` ("max" or "min" each). Pairwise: O(n^2 k) comparisons, in blocks."""
    v = np.asarray(values, dtype=float).reshape(len(values), len(modes))
    v = np.where(np.array([m == "max" for m in modes]), -v, v)  # everything minimised
    n, k = v.shape
    keep = np.ones(n, dtype=bool)
    block = max(1, _BLOCK_CELLS // max(n * k, 1))
    for start in range(0, n, block):
        rows = v[start : start + block, None, :]  # (b, 1, k) against every row (1, n, k)
        no_worse = (v[None, :, :] <= rows).all(axis=2)
        better = (v[None, :, :] < rows).any(axis=2)
        keep[start : start + block] = ~(no_worse & better).any(axis=1)
    return keep


def finished(trials: pd.DataFrame) -> pd.Series:
    """Per trial: TERMINATED after all its epochs (`epochs >= max_epochs`, max_epochs known)."""
    if trials.empty or not {"status", "epochs", "max_epochs"} <= set(trials.columns):
        return pd.Series(False, index=trials.index, dtype=bool)
    epochs = pd.to_numeric(trials["epochs"], errors="coerce").astype(float)
    budget = pd.to_numeric(trials["max_epochs"], errors="coerce").astype(float)
    done = (trials["status"].astype(str) == "TERMINATED") & budget.notna() & (epochs >= budget)
    return done.fillna(False).astype(bool)


def _values(trials: pd.DataFrame, pairs: list[tuple[str, str]]) -> np.ndarray:
    """The objectives' values (n x k floats; NaN for a missing column or a non-numeric cell)."""
    cols = []
    for metric, _ in pairs:
        col = objective_column(metric)
        if col in trials:
            cols.append(pd.to_numeric(trials[col], errors="coerce").astype(float).to_numpy())
        else:
            cols.append(np.full(len(trials), np.nan))
    return np.column_stack(cols) if cols else np.empty((len(trials), 0))


def eligible(trials: pd.DataFrame | None, objectives: Iterable[Any]) -> pd.DataFrame:
    """The finished trials with a finite value of every objective: those the front is chosen from."""
    pairs = _pairs(objectives)
    if trials is None or trials.empty:
        return pd.DataFrame() if trials is None else trials.iloc[0:0]
    ok = finished(trials).to_numpy() & np.isfinite(_values(trials, pairs)).all(axis=1)
    return trials[ok]


def _split(trials: pd.DataFrame | None, objectives: Iterable[Any]) -> tuple[pd.DataFrame, np.ndarray]:
    pairs = _pairs(objectives)
    pool = eligible(trials, pairs)
    if pool.empty:
        return pool, np.zeros(0, dtype=bool)
    return pool, non_dominated(_values(pool, pairs), [mode for _, mode in pairs])


def _sorted(df: pd.DataFrame, pairs: list[tuple[str, str]]) -> pd.DataFrame:
    """The rows by the objectives after the first (ascending), then the first (best first), then trial id."""
    if df.empty:
        return df.reset_index(drop=True)
    order = [*pairs[1:], pairs[0]]
    keys = {f"_pareto_key{i}": _values(df, [p])[:, 0] for i, p in enumerate(order)}
    ascending = [True] * (len(order) - 1) + [pairs[0][1] == "min"]
    keyed = df.assign(**keys)
    if "trial_id" in keyed:
        keyed = keyed.sort_values("trial_id", kind="stable")
    return (
        keyed.sort_values(list(keys), ascending=ascending, kind="stable")
        .drop(columns=list(keys))
        .reset_index(drop=True)
    )


def pareto_front(trials: pd.DataFrame | None, objectives: Iterable[Any]) -> pd.DataFrame:
    """The Pareto front of the trials table under `objectives` ((metric, mode) pairs or spec Objectives),
    as the front's rows of `trials` (every column kept), sorted as the module docstring says."""
    pairs = _pairs(objectives)
    pool, mask = _split(trials, pairs)
    return _sorted(pool[mask], pairs)


def dominated(trials: pd.DataFrame | None, objectives: Iterable[Any]) -> pd.DataFrame:
    """The finished trials with every objective's value that are not on the front (sorted as the front)."""
    pairs = _pairs(objectives)
    pool, mask = _split(trials, pairs)
    return _sorted(pool[~mask], pairs)


def format_objective(metric: str, value: Any) -> str:
    """A value of an objective as lines show it: 4 decimals for a validation metric, a whole number for
    a whole cost (params, MACs, bytes), else 4 significant digits; '-' for none."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "-"
    if math.isnan(v):
        return "-"
    if metric in METRICS:
        return f"{v:.4f}"
    return str(int(v)) if v.is_integer() and abs(v) < 1e15 else f"{v:.4g}"


def describe_front(front: pd.DataFrame, objectives: Iterable[Any]) -> str:
    """`val_f1 0.9512 to 0.9815, params 1200 to 35000`: each objective's range over the front."""
    parts = []
    for metric, _ in _pairs(objectives):
        col = objective_column(metric)
        values = pd.to_numeric(front[col], errors="coerce").dropna() if col in front else pd.Series(dtype=float)
        if values.empty:
            continue
        low, high = format_objective(metric, values.min()), format_objective(metric, values.max())
        parts.append(f"{metric} {low}" if low == high else f"{metric} {low} to {high}")
    return ", ".join(parts)
