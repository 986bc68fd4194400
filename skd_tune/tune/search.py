"""What proposes and what stops trials: the sampler and scheduler registries, and the search space.

- `SAMPLERS`: `search.sampler` -> a seeded Optuna sampler (TPE, CMA-ES, random, NSGA-II); TPE, random and
  NSGA-II also optimise several objectives at once (the spec refuses CMA-ES with `search.objectives`).
- `SCHEDULERS`: `search.scheduler.name` -> a Ray Tune scheduler (ASHA, FIFO) built from the spec.
- `make_searcher`: a `StudySearch` (Ray Tune's `OptunaSearch`) over the spec's space, translated once by
  `Distribution.to_optuna()` (the report's importances use the same translation), under a
  `ConcurrencyLimiter`; None for an empty space (one trial of the spec's own values). With objectives
  (the student search of a spec with `search.objectives`), Optuna gets every objective (lists of metrics
  and modes) while the scheduler and the TuneConfig keep the first one only.
- `StudySearch`: that OptunaSearch with its study in the experiment's Optuna journal file
  (`optuna/<stage>.log`, study name = the stage name; `attach` gives it the file) and honest pruning: a
  trial the scheduler stopped early is told to Optuna as PRUNED (see the class).

Every scheduler keeps trials in place: Ray Tune restores a search algorithm with the `Experiment` of
the run that started it, storage path included, so after the experiment directory moved, every trial
it creates afterwards would write (and fail to checkpoint: "Unable to set up cluster storage") under
the old path. Restored trials are relocated by Ray itself (`TuneController`, from its own storage);
`keep_in_place` does the same for each new trial before it starts.
"""

from __future__ import annotations

import copy
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import ConcurrencyLimiter, Searcher
from ray.tune.search.optuna import OptunaSearch
from ray.tune.utils.util import unflatten_dict

from ..reporting import EPOCHS_KEY
from ..spec import Distribution, Objective, SearchSpec

__all__ = [
    "CONTINUES",
    "SAMPLERS",
    "SCHEDULERS",
    "InPlaceASHA",
    "InPlaceFIFO",
    "StudySearch",
    "keep_in_place",
    "make_searcher",
    "study_searcher",
]


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
        time_attr="epoch",  # a report may carry several epochs (reporting.py): its own count is not the epoch
        max_t=max_epochs,
        grace_period=min(s.grace_period, max_epochs),
        reduction_factor=s.reduction_factor,
    )


SCHEDULERS: dict[str, Callable[[SearchSpec, int], TrialScheduler]] = {
    "asha": _asha,
    "fifo": lambda search, max_epochs: InPlaceFIFO(),
}


_RAY_TRIAL = "ray_trial:"  # study user attribute: Ray Tune trial id -> Optuna trial number
# A key of the config of a Ray trial that takes over an orphan (below): the Ray trials that ran its Optuna
# trial before, whose checkpoints it goes on from (tune/trainables.py); not a parameter of the trial.
CONTINUES = "_continues"


class StudySearch(OptunaSearch):
    """Ray Tune's OptunaSearch with its study in an Optuna journal file, and honest pruning.

    The study: `attach(journal, on_write)` names the file (the experiment's current one, also after a
    restore: the file pickled with Ray's searcher state is never used) and what uploads it; the study
    (named `study_name`, the stage) is opened there on first use, with `load_if_exists`. Ray pickles the
    searcher without its study: Optuna's trials are kept as numbers, and each Ray trial id is recorded
    in the study (user attribute `ray_trial:<id>`), so a restored search continues the same study. Ray
    restores from its last state snapshot, which may be older than the journal: Optuna trials of Ray
    trials that Ray no longer knows (orphans) are handed to the next trials Ray creates (their parameters
    again; a finished one is not told twice), so the study keeps one Optuna trial per Ray trial, no
    duplicates; the new trial's config names the Ray trials that ran it before (`CONTINUES`), and it
    goes on from their latest checkpoint: a trial that ended is not trained again.

    Honest pruning: Ray tells Optuna that a trial the scheduler (ASHA) stopped early is COMPLETE with the
    value of its last epoch, which biases TPE toward configurations that look good early. Here such a
    trial (its last result's `epoch` below `max_epochs`) is told PRUNED, with the intermediate value
    of each epoch (each report carries every epoch since the previous one, `reporting.EPOCHS_KEY`; Ray
    hands the report that ended the trial to `on_trial_complete` only: its epochs are reported there);
    an errored trial stays FAIL. A finished trial's value is that of its last epoch (Ray's choice,
    kept; `last_val_f1` in trials.parquet), a PRUNED one's too (Optuna's: its last intermediate value). A subclass and not a Tune callback, because the searcher owns the Optuna trial objects (and
    tells Optuna before any callback sees the trial complete). Optuna allows neither `report` nor pruning
    in a multi-objective study: there (lists of metrics) Ray's behaviour is kept, every trial that
    reported is COMPLETE with its last result. `honest_pruning=False` keeps Ray's behaviour everywhere
    (benchmarks/pruning.py compares the two).
    """

    def __init__(self, *, max_epochs: int, honest_pruning: bool = True, **kwargs: Any):
        self._max_epochs = max_epochs
        self._honest = honest_pruning
        self._journal: str | None = None
        self._on_write: Callable[[], None] | None = None
        self._settled: set[str] = set()  # Ray trials given an Optuna trial that had already finished
        self._orphans: list[int] = []
        self._ray_ids_of: dict[int, list[str]] = {}
        self._mode_of_study: Any = None
        super().__init__(**kwargs)

    def attach(self, journal: str | Path, on_write: Callable[[], None] | None = None) -> None:
        """Keep the study in the journal file `journal`; `on_write()` after each trial is told."""
        self._journal, self._on_write = str(journal), on_write
        self._ot_study = None

    def _setup_study(self, mode: Any) -> None:  # Ray calls it from __init__: the study opens on first use
        self._mode_of_study = mode

    def _study(self) -> optuna.Study:
        if self._ot_study is None:
            if self._journal is None:
                raise RuntimeError("StudySearch: attach() the journal file before the search starts")
            Path(self._journal).parent.mkdir(parents=True, exist_ok=True)
            self._storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(self._journal))
            super()._setup_study(self._mode_of_study)
            self._reconcile()
        return self._ot_study

    def _reconcile(self) -> None:
        """Turn the pickled {Ray trial id: (number, params)} back into Optuna trials of the study on disk."""
        study = self._ot_study
        trials = {t.number: t for t in study.get_trials(deepcopy=False)}
        recorded = {k[len(_RAY_TRIAL) :]: v for k, v in study.user_attrs.items() if k.startswith(_RAY_TRIAL)}
        restored, self._ot_trials = self._ot_trials, {}
        for ray_id, kept in restored.items():
            number, params = kept if isinstance(kept, tuple) else (kept.number, kept.params)
            number = recorded.get(ray_id, number)
            if number not in trials:  # the journal lost it (an older upload): ask it again
                study.enqueue_trial(params)
                self._ask(ray_id)
                continue
            self._ot_trials[ray_id] = optuna.Trial(study, trials[number]._trial_id)
            if trials[number].state.is_finished() and ray_id not in self._completed_trials:
                self._settled.add(ray_id)
        used = {t.number for t in self._ot_trials.values()}
        self._orphans = sorted(n for n in trials if n not in used)
        self._ray_ids_of = {}  # Optuna trial number -> the Ray trials that ran it, in the order recorded
        for ray_id, number in recorded.items():
            self._ray_ids_of.setdefault(number, []).append(ray_id)

    def _ask(self, ray_id: str) -> optuna.Trial:
        trial = self._ot_trials[ray_id] = self._ot_study.ask(fixed_distributions=self._space)
        self._record(ray_id, trial)
        return trial

    def _record(self, ray_id: str, trial: optuna.Trial) -> None:
        self._ot_study.set_user_attr(f"{_RAY_TRIAL}{ray_id}", trial.number)

    def _finished(self, trial_id: str) -> bool:
        if trial_id in self._settled or trial_id in self._completed_trials:
            return True
        trial = self._ot_trials[trial_id]
        return self._ot_study._storage.get_trial(trial._trial_id).state.is_finished()

    def suggest(self, trial_id: str) -> dict | None:
        study = self._study()
        if trial_id not in self._ot_trials:
            if self._orphans:  # an Optuna trial of a Ray trial that the restored Ray no longer knows
                number = self._orphans.pop(0)
                frozen = study._storage.get_trial(
                    study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
                )
                self._ot_trials[trial_id] = optuna.Trial(study, frozen._trial_id)
                self._record(trial_id, self._ot_trials[trial_id])
                if frozen.state.is_finished():
                    self._settled.add(trial_id)
                before = self._ray_ids_of.get(number, [])  # the new trial goes on from their checkpoints
                return {**unflatten_dict(frozen.params), **({CONTINUES: list(before)} if before else {})}
            return unflatten_dict(self._ask(trial_id).params)
        return super().suggest(trial_id)

    def _report(self, trial_id: str, result: dict) -> None:
        """Tell Optuna the value of each epoch the result carries (reporting.EPOCHS_KEY), once each."""
        if isinstance(self.metric, list):
            return  # Optuna takes no intermediate values in a multi-objective study
        trial = self._ot_trials[trial_id]
        stored = self._ot_study._storage.get_trial(trial._trial_id).intermediate_values
        for epoch in result.get(EPOCHS_KEY) or [result]:
            value, step = epoch.get(self.metric), epoch.get("epoch")
            if value is not None and step is not None and int(step) not in stored:
                trial.report(float(value), int(step))

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self._study()
        if not self._finished(trial_id) and trial_id not in self._completed_trials:
            self._report(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        self._study()
        if self._finished(trial_id):
            self._completed_trials.add(trial_id)
            return
        if result:
            # The result that ended the trial (the scheduler's STOP, also at max_t) never reached
            # on_trial_result: its epochs are reported here, unless they were already.
            self._report(trial_id, result)
        if (
            self._honest
            and not error
            and result
            and not isinstance(self.metric, list)
            and result.get("epoch", self._max_epochs) < self._max_epochs
        ):
            self._ot_study.tell(self._ot_trials[trial_id], state=optuna.trial.TrialState.PRUNED)
            self._completed_trials.add(trial_id)
        else:
            super().on_trial_complete(trial_id, result, error)
        if self._on_write is not None:
            self._on_write()

    # Pickled (tuner.pkl, Ray's searcher state) without the study, its storage and the uploader.
    def __getstate__(self) -> dict:
        state = {k: v for k, v in self.__dict__.items() if k not in ("_ot_study", "_storage", "_on_write")}
        state["_ot_trials"] = {
            k: v if isinstance(v, tuple) else (v.number, v.params) for k, v in self._ot_trials.items()
        }
        return {**state, "_ot_study": None, "_storage": None, "_on_write": None, "_orphans": [], "_ray_ids_of": {}}

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__getstate__(), f)

    def restore(self, checkpoint_path: str) -> None:
        """Ray's searcher state, with this run's journal file and uploader (set by `attach`) kept."""
        with open(checkpoint_path, "rb") as f:
            state = pickle.load(f)
        here = (self._journal, self._on_write)
        self.__dict__.update(state)
        (self._journal, self._on_write), self._ot_study = here, None


def study_searcher(search_alg: Any) -> StudySearch | None:
    """The StudySearch inside a Tuner's search algorithm (under its ConcurrencyLimiter), if any."""
    while search_alg is not None and not isinstance(search_alg, StudySearch):
        search_alg = getattr(search_alg, "searcher", None)
    return search_alg


def make_searcher(
    search: SearchSpec,
    space: dict[str, Distribution],
    seed: int,
    objectives: tuple[Objective, ...] = (),
    *,
    study_name: str = "optuna",
    max_epochs: int,
    honest_pruning: bool = True,
) -> Searcher | None:
    """Optuna over `space` with the seeded `search.sampler` for `search.metric` and `search.mode` or,
    given `objectives`, for all of them (Optuna's multi-objective study: a trial completes with the last
    result it reported, which must then hold every objective), at most `search.max_concurrent` proposals
    out at once: a `StudySearch` (study `study_name`; `attach` its journal file before the search runs).
    (With its own space, OptunaSearch takes no metric or mode from the TuneConfig: they are given here.)"""
    if not space:
        return None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    metric: str | list[str] = [o.metric for o in objectives] if objectives else search.metric
    mode: str | list[str] = [o.mode for o in objectives] if objectives else search.mode
    searcher = StudySearch(
        space={name: d.to_optuna() for name, d in space.items()},
        metric=metric,
        mode=mode,
        sampler=SAMPLERS[search.sampler](seed),
        study_name=study_name,
        max_epochs=max_epochs,
        honest_pruning=honest_pruning,
    )
    return ConcurrencyLimiter(searcher, max_concurrent=search.max_concurrent)
