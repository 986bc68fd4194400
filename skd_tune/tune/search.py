"""What proposes and what stops trials: the sampler and scheduler registries, and the search space.

- `SAMPLERS`: `search.sampler` -> a seeded Optuna sampler (TPE, CMA-ES, random, NSGA-II); TPE, random and
  NSGA-II also optimise several objectives at once (the spec refuses CMA-ES with `search.objectives`).
- `SCHEDULERS`: `search.scheduler.name` -> a Ray Tune scheduler (ASHA, FIFO) built from the spec.
- `make_searcher`: Ray Tune's `OptunaSearch` over the spec's space, translated once by
  `Distribution.to_optuna()` (the report's importances use the same translation), under a
  `ConcurrencyLimiter`; None for an empty space (one trial of the spec's own values). With objectives
  (the student search of a spec with `search.objectives`), Optuna gets every objective (lists of metrics
  and modes) while the scheduler and the TuneConfig keep the first one only.

Every scheduler keeps trials in place: Ray Tune restores a search algorithm with the `Experiment` of
the run that started it, storage path included, so after the experiment directory moved, every trial
it creates afterwards would write (and fail to checkpoint: "Unable to set up cluster storage") under
the old path. Restored trials are relocated by Ray itself (`TuneController`, from its own storage);
`keep_in_place` does the same for each new trial before it starts.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import optuna
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import ConcurrencyLimiter, Searcher
from ray.tune.search.optuna import OptunaSearch

from ..spec import Distribution, Objective, SearchSpec

__all__ = ["SAMPLERS", "SCHEDULERS", "InPlaceASHA", "InPlaceFIFO", "keep_in_place", "make_searcher"]


SAMPLERS: dict[str, Callable[[int], optuna.samplers.BaseSampler]] = {
    "tpe": lambda seed: optuna.samplers.TPESampler(seed=seed),
    "cmaes": lambda seed: optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False),
    "random": lambda seed: optuna.samplers.RandomSampler(seed=seed),
    "nsga2": lambda seed: optuna.samplers.NSGAIISampler(seed=seed),
}


def keep_in_place(tune_controller: Any, trial: Any) -> None:
    """Give a new trial the storage of the run that executes it, if it carries an older one."""
    here = tune_controller._storage  # what Ray's own restore relocates the restored trials to
    if trial.storage.storage_fs_path == here.storage_fs_path:
        return
    moved = copy.copy(trial.storage)
    moved.storage_filesystem, moved.storage_fs_path = here.storage_filesystem, here.storage_fs_path
    trial.set_storage(moved)


class _KeepInPlace:
    """Scheduler mixin: `keep_in_place` for every trial added (before it starts)."""

    def on_trial_add(self, tune_controller, trial):
        keep_in_place(tune_controller, trial)
        super().on_trial_add(tune_controller, trial)


class InPlaceFIFO(_KeepInPlace, FIFOScheduler):
    """Ray's FIFO scheduler with `keep_in_place`."""


class InPlaceASHA(_KeepInPlace, ASHAScheduler):
    """Ray's ASHA scheduler with `keep_in_place`."""


def _asha(search: SearchSpec, max_epochs: int) -> TrialScheduler:
    s = search.scheduler
    return InPlaceASHA(
        time_attr="training_iteration",
        max_t=max_epochs,
        grace_period=min(s.grace_period, max_epochs),
        reduction_factor=s.reduction_factor,
    )


SCHEDULERS: dict[str, Callable[[SearchSpec, int], TrialScheduler]] = {
    "asha": _asha,
    "fifo": lambda search, max_epochs: InPlaceFIFO(),
}


def make_searcher(
    search: SearchSpec, space: dict[str, Distribution], seed: int, objectives: tuple[Objective, ...] = ()
) -> Searcher | None:
    """Optuna over `space` with the seeded `search.sampler` for `search.metric` and `search.mode` or,
    given `objectives`, for all of them (Optuna's multi-objective study: a trial completes with the last
    result it reported, which must then hold every objective), at most `search.max_concurrent` proposals
    out at once. (With its own space, OptunaSearch takes no metric or mode from the TuneConfig: they are
    given here.)"""
    if not space:
        return None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    metric: str | list[str] = [o.metric for o in objectives] if objectives else search.metric
    mode: str | list[str] = [o.mode for o in objectives] if objectives else search.mode
    searcher = OptunaSearch(
        space={name: d.to_optuna() for name, d in space.items()},
        metric=metric,
        mode=mode,
        sampler=SAMPLERS[search.sampler](seed),
    )
    return ConcurrencyLimiter(searcher, max_concurrent=search.max_concurrent)
