"""Choosing a student trial other than the single best: by its id, or the best under a budget.

`finished(trials)` is a trial that can be chosen: one on which the Pareto front is computed
(`pareto.finished`: status TERMINATED after all its epochs; a trial the scheduler stopped early was never
trained to the end) that has a checkpoint. `pick_trial(trials, "params<=20000", metric, mode)` is the
answer to "the best student within this budget": among the finished trials whose column satisfies the
budget, the best by `best_<metric>` (ties: the first by trial id, as `best_trial`).
"""

from __future__ import annotations

import math
import operator
from typing import Any

import pandas as pd

from ..errors import UserError
from ..pareto import finished as pareto_finished
from ..spec.objectives import parse_budget_text
from .results import best_trial

__all__ = [
    "ARCHITECTURE",
    "BUDGET_OPS",
    "architecture_of",
    "compared_point",
    "finished",
    "parse_budget",
    "pick_trial",
    "select_trial",
]

BUDGET_OPS = {"<=": operator.le, "<": operator.lt, ">=": operator.ge, ">": operator.gt}
ARCHITECTURE = ("model", "width")  # the searchable student fields that make its size


def finished(trials: pd.DataFrame | None) -> pd.DataFrame:
    """The trials that reported every epoch (`pareto.finished`, the front's own definition) and have a
    checkpoint (empty when there are none)."""
    if trials is None or trials.empty or "checkpoint_path" not in trials:
        return pd.DataFrame()
    return trials[pareto_finished(trials) & trials["checkpoint_path"].notna()]


def parse_budget(text: str, columns: list[str], label: str = "--pick") -> tuple[str, str, float]:
    """("params", "<=", 20000.0) from "params<=20000" (`spec.parse_budget_text`); `UserError` naming the
    valid columns otherwise."""
    try:
        column, op, number = parse_budget_text(text)
    except ValueError as e:
        raise UserError(f"{label} {e}") from None
    if column not in columns:
        raise UserError(
            f"{label} {text!r}: the student trials have no column {column!r}; budget columns: {', '.join(columns)}"
        )
    return column, op, number


def select_trial(trials: pd.DataFrame | None, trial_id: str) -> dict[str, Any]:
    """The finished trial `trial_id`, as a dict; `UserError` listing the finished ones otherwise."""
    done = finished(trials)
    rows = done[done["trial_id"] == trial_id] if not done.empty else done
    if rows.empty:
        known = trials is not None and not trials.empty and trial_id in set(trials["trial_id"])
        why = "did not finish all its epochs (or has no checkpoint)" if known else "is not a student trial"
        choices = ", ".join(done["trial_id"]) if not done.empty else "none"
        raise UserError(f"--trial {trial_id}: that trial {why}; finished trials: {choices}")
    return rows.iloc[0].to_dict()


def pick_trial(
    trials: pd.DataFrame | None, budget: str, metric: str, mode: str, label: str = "--pick"
) -> dict[str, Any]:
    """The finished trial with the best `best_<metric>` among those within `budget` (see the module);
    errors name the budget as `label` (the CLI option or the spec field)."""
    done = finished(trials)
    numeric = [c for c in done.columns if c != "trial_id" and pd.api.types.is_numeric_dtype(done[c])]
    column, op, value = parse_budget(budget, numeric or list(done.columns), label)
    values = pd.to_numeric(done[column], errors="coerce")
    within = done[values.map(lambda v: not math.isnan(v) and BUDGET_OPS[op](v, value))]
    best = best_trial(within, metric, mode)
    if best is None:
        lowest = values.min() if not values.dropna().empty else float("nan")
        raise UserError(
            f"{label} {budget!r}: none of the {len(done)} finished trials is within that budget (their {column} "
            f"ranges from {lowest:g} to {values.max():g}); loosen the budget"
        )
    return best


def compared_point(trials: pd.DataFrame | None, point: str | None, metric: str, mode: str) -> dict[str, Any] | None:
    """The SKD trial the method table compares: the best within the budget `point` (`methods.point`), or
    the best trial (None before any trial reported)."""
    if point is None:
        return best_trial(trials, metric, mode)
    return pick_trial(trials, point, metric, mode, label="methods.point")


def architecture_of(trial: dict[str, Any], space: Any) -> dict[str, Any]:
    """The searched architecture fields (`ARCHITECTURE`) of `trial`: what KD and no-KD hold fixed when the
    method table compares one point of a cost trade-off."""
    out = {}
    for name in ARCHITECTURE:
        if name in space:
            value = trial[name]
            out[name] = value.item() if hasattr(value, "item") else value
    return out
