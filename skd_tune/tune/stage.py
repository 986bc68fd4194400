"""The one skeleton of every Tune stage (teacher, student search, method table).

`run_tune_stage(exp, spec, stage, ...)` wraps the trainable with its data and resources, creates the
stage's Tuner or restores it (`Tuner.restore`: finished trials kept, running ones continued from their
last checkpoint, errored ones resumed; Tune's `restart_errored` breaks `OptunaSearch`), gives it this
run's callbacks (results tables, progress line, signals), gives its Optuna searcher the experiment's
study file (`optuna/<stage>.log`, synced when the stage ends), fits it, and tells an interrupted stage
(`SearchInterrupted`) and one whose every trial failed (`PipelineError`) from a finished one.

Ray writes `tuner.pkl` when a Tuner is built, not atomically: a driver killed at that moment leaves a
file that cannot be restored. So a stage is recorded as started in the experiment's state only once
its Tuner exists, before `fit`; a Tune directory without that record holds no trial and is started afresh.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray import tune

from ..errors import PipelineError, SearchInterrupted, first_line, last_line
from ..experiment import Experiment, ResultsTables
from ..experiment.layout import TUNE_DIRS, study_file
from ..spec import Distribution, Objective, Resources, Spec
from .callbacks import ProgressCallback, ResultsCallback
from .search import SCHEDULERS, make_searcher, study_searcher
from .signals import Interruption, SignalCallback

__all__ = ["TuneStage", "run_tune_stage", "set_aside_damaged_state", "trial_id_of"]

# The 3 latest checkpoints of each trial, with no score attribute: the experiment snapshot that Tune
# restores from is forced at least every 3 checkpoints, so the checkpoint it names always still exists
# (with num_to_keep=1 and a score, a SIGKILL could leave it naming a deleted one). Each checkpoint
# carries the best epoch's weights, so the latest one is all export needs.
_KEEP_CHECKPOINTS = 3


@dataclass
class TuneStage:
    """What one Tune stage runs: `trainable(config, **parameters)` with `resources` per trial, over an
    Optuna `space` (or a `grid` of values), `total` trials of at most `max_epochs` epochs each."""

    name: str  # teacher | student | search_kd | search_nokd | methods
    trainable: Callable[..., None]
    parameters: dict[str, Any]
    resources: Resources
    total: int
    max_epochs: int
    param_names: list[str]
    space: dict[str, Distribution] = field(default_factory=dict)
    grid: dict[str, list[Any]] = field(default_factory=dict)
    scheduler: str = "fifo"
    reuse_actors: bool = True
    fixed: dict[str, Any] = field(default_factory=dict)  # recorded with each trial's parameters
    # The objectives Optuna optimises together (the student search of a spec with search.objectives); the
    # scheduler and the TuneConfig get search.metric alone, which the spec makes the first objective.
    objectives: tuple[Objective, ...] = ()


def trial_id_of(result: Any) -> str:
    """The trial id of a Ray Tune `Result` (its last report, or its directory `<trainable>_<id>`)."""
    return (result.metrics or {}).get("trial_id") or Path(result.path).name.split("_", 2)[-1]


def _trial_dirname(trial: Any) -> str:
    return f"{trial.trainable_name}_{trial.trial_id}"


def _tuner(exp: Experiment, spec: Spec, stage: TuneStage, trainable: Any, callbacks: list) -> tune.Tuner:
    s = spec.search
    return tune.Tuner(
        trainable,
        param_space={k: tune.grid_search(v) for k, v in stage.grid.items()},
        tune_config=tune.TuneConfig(
            metric=s.metric,
            mode=s.mode,
            num_samples=1 if stage.grid else stage.total,
            search_alg=make_searcher(
                s, stage.space, spec.seed, stage.objectives, study_name=stage.name, max_epochs=stage.max_epochs
            ),
            scheduler=SCHEDULERS[stage.scheduler](s, stage.max_epochs),
            max_concurrent_trials=s.max_concurrent,
            reuse_actors=stage.reuse_actors,
            trial_dirname_creator=_trial_dirname,
        ),
        run_config=tune.RunConfig(
            name=TUNE_DIRS[stage.name],
            storage_path=exp.tune_location(),
            verbose=0,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=_KEEP_CHECKPOINTS),
            failure_config=tune.FailureConfig(max_failures=s.max_failures),
            callbacks=callbacks,
        ),
    )


_STATE_PREFIX, _STATE_SUFFIX = "experiment_state-", ".json"


def set_aside_damaged_state(exp: Experiment, stage: str, say: Callable[[str], None]) -> int:
    """Ray Tune keeps one state snapshot per driver session (`experiment_state-<session>.json`, with the
    searcher's and the callbacks' state of that session beside it) and rewrites it in place: a driver
    killed mid-write leaves it empty, and Ray then "restores" a run with no trials. When the newest
    snapshot does not parse, its session's files are renamed `*.damaged` so that Ray restores the previous
    session's snapshot (the trials since then run again; the results tables keep every epoch reported).
    Returns how many sessions were set aside."""
    import pyarrow.fs as pafs

    fs, base = exp.tune_storage()
    directory = f"{base.rstrip('/')}/{TUNE_DIRS[stage]}"
    entries = fs.get_file_info(pafs.FileSelector(directory, allow_not_found=True))
    names = sorted(e.base_name for e in entries if e.type == pafs.FileType.File)
    states = [n for n in names if n.startswith(_STATE_PREFIX) and n.endswith(_STATE_SUFFIX)]
    set_aside = 0
    for newest in reversed(states):
        try:
            with fs.open_input_stream(f"{directory}/{newest}") as f:
                json.loads(f.readall())
            break  # the newest snapshot is whole
        except (ValueError, OSError):
            session = newest[len(_STATE_PREFIX) : -len(_STATE_SUFFIX)]
            for name in (n for n in names if f"-{session}." in n):
                fs.move(f"{directory}/{name}", f"{directory}/{name}.damaged")
            set_aside += 1
            say(
                f"[{stage}] Ray Tune's state snapshot {newest} was cut short by a killed driver; resuming from "
                "the snapshot before it (its files are kept as *.damaged)"
            )
    return set_aside


def _restore(exp: Experiment, stage: TuneStage, trainable: Any, callbacks: list) -> tune.Tuner:
    path = exp.tune_location(stage.name)
    try:
        tuner = tune.Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=True)
    except (EOFError, OSError, ValueError, RuntimeError) as e:
        raise PipelineError(
            f"the Ray Tune experiment {path} cannot be restored ({first_line(e)}). Move that directory aside "
            f"and run again to redo the {stage.name} stage, or give the spec a new `name:`"
        ) from None
    # Tune restores the callbacks pickled with the experiment (ours pickle to nothing): this run's instead.
    tuner._local_tuner.get_run_config().callbacks = callbacks
    return tuner


def _attach_study(exp: Experiment, stage: str, tuner: tune.Tuner) -> bool:
    """Give the stage's Optuna searcher (if it has one) its study file: the experiment's current one
    (also after the directory moved), uploaded after each trial on a URI storage. True if it has one."""
    searcher = study_searcher(tuner._local_tuner._tune_config.search_alg)
    if searcher is not None:
        searcher.attach(exp.study_path(stage), lambda: exp.sync(study_file(stage)))
    return searcher is not None


def run_tune_stage(
    exp: Experiment,
    spec: Spec,
    stage: TuneStage,
    *,
    printer: Callable[[str], None],
    interruption: Interruption,
    resume_cmd: str,
) -> tuple[tune.ResultGrid, ResultsTables]:
    """Create or restore the stage's Tune experiment and fit it; its results tables, flushed, with the grid."""
    s = spec.search
    tables = exp.tables(stage.name, stage.param_names, s.metric, s.mode)
    callbacks = [
        ResultsCallback(tables, stage.max_epochs, stage.fixed),
        ProgressCallback(stage.name, stage.total, s.metric, stage.param_names, tables.best_trial, printer),
        SignalCallback(interruption),
    ]
    trainable = tune.with_resources(
        tune.with_parameters(stage.trainable, **stage.parameters),
        {"cpu": stage.resources.cpu, "gpu": stage.resources.gpu},
    )
    if exp.started(stage.name):
        set_aside_damaged_state(exp, stage.name, printer)
    if exp.started(stage.name) and tune.Tuner.can_restore(exp.tune_location(stage.name)):
        tuner = _restore(exp, stage, trainable, callbacks)
    else:
        exp.delete_tune_experiment(stage.name)  # a Tuner whose construction was cut short: no trial ever ran
        exp.study_path(stage.name).unlink(missing_ok=True)  # and its Optuna study, if any, is started afresh
        tuner = _tuner(exp, spec, stage, trainable, callbacks)
        exp.mark_started(stage.name)
    has_study = _attach_study(exp, stage.name, tuner)
    try:
        grid = tuner.fit()
    finally:
        interruption.stage_ended()
        tables.flush(force=True)
        if has_study and exp.study_path(stage.name).exists():
            exp.sync(study_file(stage.name))
    finished = grid.num_terminated + grid.num_errors
    if interruption.interrupted or finished < stage.total:
        tables.close()
        raise SearchInterrupted(
            f"{stage.name} stage interrupted with {finished}/{stage.total} trials finished; everything so far is "
            f"saved. Resume with: {resume_cmd}"
        )
    if grid.num_terminated == 0:
        tables.close()
        raise PipelineError(
            f"every {stage.name} trial failed; the first error: {last_line(grid.errors[0] if grid.errors else None)}. "
            f"Each trial's error text is in the `error` column of {tables.trials_path}; fix the cause and run the "
            "same command again to resume"
        )
    return grid, tables
