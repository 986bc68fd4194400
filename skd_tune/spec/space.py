"""The search space of a spec: one entry per searched field (`Distribution`), and the two helpers that
apply a trial's parameters to a spec section (`nest`, `merge`). Pure: Optuna is imported only by
`Distribution.to_optuna`, the one translation of the space (the search and the report's importances).
"""

from __future__ import annotations

import builtins
import math
from typing import Any

from pydantic import model_validator

from .base import Strict as _Strict

__all__ = ["Distribution", "merge", "nest"]


def nest(params: dict[str, Any]) -> dict[str, Any]:
    """{"curriculum.start": 0.3, "lr": 0.1} -> {"curriculum": {"start": 0.3}, "lr": 0.1}."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        *parents, leaf = key.split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in changes.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


class Distribution(_Strict):
    """One search-space entry: exactly one of `uniform`, `loguniform`, `int` (inclusive), `choice`."""

    uniform: tuple[float, float] | None = None
    loguniform: tuple[float, float] | None = None
    int: tuple[builtins.int, builtins.int] | None = None  # (the field name shadows the builtin here)
    choice: list[Any] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Distribution:
        given = [k for k in ("uniform", "loguniform", "int", "choice") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of uniform: [low, high], loguniform: [low, high], int: [low, high], "
                f"choice: [a, b, ...]; got {given or 'none'}"
            )
        kind = given[0]
        if kind == "choice":
            if not self.choice:
                raise ValueError("choice: must list at least one value, got []")
            return self
        low, high = getattr(self, kind)
        if not (math.isfinite(low) and math.isfinite(high)):
            raise ValueError(f"{kind}: bounds must be finite, got [{low}, {high}]")
        if low > high:
            raise ValueError(f"{kind}: low must be <= high, got [{low}, {high}]")
        if kind == "loguniform" and low <= 0:
            raise ValueError(f"loguniform: low must be > 0, got {low}")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in ("uniform", "loguniform", "int", "choice") if getattr(self, k) is not None)

    def values_to_check(self) -> list[Any]:
        """Values whose validity as the target field stands for the whole range (bounds or choices)."""
        return list(self.choice) if self.kind == "choice" else list(getattr(self, self.kind))

    def to_optuna(self):
        """This entry as an Optuna distribution: the one translation of the search space, used by the
        search (`OptunaSearch(space=...)`) and by the report's importances. Optuna is imported here."""
        import optuna.distributions as od

        kind = self.kind
        if kind == "choice":
            return od.CategoricalDistribution(list(self.choice))
        if kind == "int":
            return od.IntDistribution(self.int[0], self.int[1])  # inclusive, like the spec
        low, high = getattr(self, kind)
        return od.FloatDistribution(float(low), float(high), log=kind == "loguniform")
