"""`search.objectives`: the student search's objectives when it trades validation quality against cost.

    search:
      objectives: [{metric: val_f1, mode: max}, {metric: params, mode: min}]
      sampler: nsga2            # or tpe (both multi-objective); cmaes optimises one objective only

Definitions and rules (`check_objectives` enforces them, with the messages the user sees):

- An `Objective` is a metric of `names.OBJECTIVE_METRICS` (a validation metric of `names.METRICS`, or a
  cost of `names.COST_METRICS`) and the direction it is optimised in (`max` or `min`).
- Empty (the default): one objective, `search.metric` in `search.mode`, as without this field.
- Otherwise at least 2 objectives, no metric twice, and the first is a validation metric: it is the one
  objective ASHA stops trials on, the progress line shows and "the best trial" (export, leaderboard)
  is the best of; Optuna's multi-objective sampler gets all of them.
- The first objective sets `search.metric` and `search.mode`: left out, they are taken from it; written
  out, they must equal it (anything else would make two "best" trials).
- Samplers: `cmaes` optimises a single objective and is refused with objectives; `nsga2` needs them
  (for one objective, tpe or cmaes); `tpe` and `random` work either way.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import field_validator

from ..names import COST_METRICS, METRICS, OBJECTIVE_METRICS
from .base import Strict

__all__ = [
    "BUDGET_OPS",
    "MULTI_OBJECTIVE_ONLY_SAMPLERS",
    "SINGLE_OBJECTIVE_SAMPLERS",
    "Objective",
    "check_objectives",
    "fill_search_metric",
    "parse_budget_text",
]

# A budget on a trials.parquet column, e.g. "params<=20000": `methods.point` and `skd-tune export --pick`.
BUDGET_OPS = ("<=", "<", ">=", ">")
_BUDGET = re.compile(
    r"^\s*([A-Za-z_][A-Za-z0-9_.]*)\s*(<=|>=|<|>)\s*([-+]?[0-9][0-9_]*\.?[0-9_]*(?:[eE][-+]?[0-9]+)?)\s*$"
)

SINGLE_OBJECTIVE_SAMPLERS = ("cmaes",)  # Optuna's CmaEsSampler takes one objective only
MULTI_OBJECTIVE_ONLY_SAMPLERS = ("nsga2",)  # a genetic algorithm over the Pareto ranks: for objectives only


class Objective(Strict):
    """One objective of a multi-objective search: `metric` (validation metric or cost) and `mode`."""

    metric: str
    mode: Literal["max", "min"]

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, v: str) -> str:
        if v not in OBJECTIVE_METRICS:
            raise ValueError(
                f"unknown objective metric {v!r}; available: {', '.join(OBJECTIVE_METRICS)} "
                f"(validation metrics: {', '.join(METRICS)}; costs: {', '.join(COST_METRICS)})"
            )
        return v

    @property
    def is_cost(self) -> bool:
        """True for a cost (names.COST_METRICS), False for a validation metric."""
        return self.metric in COST_METRICS

    def label(self) -> str:
        """`val_f1 max`: how the run's lines name it."""
        return f"{self.metric} {self.mode}"


def fill_search_metric(raw: Any) -> Any:
    """The raw `search` mapping with `metric` and `mode` taken from the first objective where they are
    left out (a `mode="before"` validator: what is written out stays as written, and is checked after)."""
    if not isinstance(raw, dict):
        return raw
    objectives = raw.get("objectives")
    first = objectives[0] if isinstance(objectives, (list, tuple)) and objectives else None
    if not isinstance(first, dict) or first.get("metric") not in METRICS:
        return raw  # nothing to take (a cost first is reported by check_objectives)
    filled = dict(raw)
    for key in ("metric", "mode"):
        if key not in filled and isinstance(first.get(key), str):
            filled[key] = first[key]
    return filled


def check_objectives(objectives: tuple[Objective, ...], metric: str, mode: str, sampler: str) -> None:
    """Raise `ValueError` (the message names the field and the fix) unless the objectives follow the
    rules of this module's docstring; `metric`, `mode`, `sampler`: the search's own fields. The messages
    follow the path `search: ` that validation.py puts in front of them."""
    if not objectives:
        if sampler in MULTI_OBJECTIVE_ONLY_SAMPLERS:
            raise ValueError(
                f"sampler {sampler} is for a multi-objective search, but search.objectives is empty (one objective: "
                f"search.metric {metric}); list the objectives, e.g. objectives: [{{metric: {metric}, mode: {mode}}}, "
                "{metric: params, mode: min}], or use sampler: tpe"
            )
        return
    listed = ", ".join(o.label() for o in objectives)
    if len(objectives) < 2:
        raise ValueError(
            f"search.objectives lists 1 objective ({listed}); a multi-objective search needs at least 2, e.g. add "
            "{metric: params, mode: min}; for a single objective, remove search.objectives and set search.metric "
            "and search.mode"
        )
    seen = [o.metric for o in objectives]
    twice = sorted({m for m in seen if seen.count(m) > 1})
    if twice:
        raise ValueError(f"search.objectives lists {', '.join(twice)} more than once ({listed}); list each metric once")
    first = objectives[0]
    if first.metric not in METRICS:
        raise ValueError(
            f"the first of search.objectives must be a validation metric ({', '.join(METRICS)}), got {first.metric}: "
            "ASHA stops trials on it and the best trial is the best by it; put a validation metric first"
        )
    if (metric, mode) != (first.metric, first.mode):
        raise ValueError(
            f"search.metric and search.mode ({metric} {mode}) differ from the first objective ({first.label()}), "
            "which sets them: leave search.metric and search.mode out, or make them equal to it"
        )
    if sampler in SINGLE_OBJECTIVE_SAMPLERS:
        raise ValueError(
            f"sampler {sampler} optimises a single objective, but search.objectives lists {len(objectives)} "
            f"({listed}); use sampler: nsga2 or tpe, or remove search.objectives"
        )


def parse_budget_text(text: str) -> tuple[str, str, float]:
    """("params", "<=", 20000.0) from "params<=20000" (operators: <=, <, >=, >); `ValueError` otherwise."""
    m = _BUDGET.match(text)
    if m is None:
        raise ValueError(f"{text!r} is not a budget; write COLUMN<=VALUE (or <, >=, >), e.g. 'params<=20000'")
    return m.group(1), m.group(2), float(m.group(3).replace("_", ""))
