"""Ray Tune function trainables: the trainings of `recipes.py`, reported to Tune as they go.

Each trainable turns Ray's config dict into a typed spec on its first line, receives the dataset (and
the cached teacher logits) once through the object store (`tune.with_parameters`), reports its epochs
(with a checkpoint, or not) when the `reporting.ReportPolicy` says so, each report carrying every epoch
since the last, and continues after a restore from its latest checkpoint: Tune's, or a later one in its
own directory (`_newer_state`).

Test-only switch (off unless set): `SKD_TUNE_TEST_BARRIER=DIR:STAGE:EPOCH` makes every trial of STAGE
(teacher, student, methods) that reports epoch EPOCH write `DIR/reached-<pid>-<epoch>` and wait until
`DIR/release` exists (STAGE teacher_logits, EPOCH 0: the teacher-logits computation, before it
starts), so a test can stop a run at a known point instead of polling its output.
"""

from __future__ import annotations

import os
import posixpath
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import ray
from ray import tune

from ..data import Dataset
from ..recipes import TrainingRun, build_student_run, build_teacher_run, teacher_logits
from ..reporting import EPOCHS_KEY, ReportPolicy
from ..spec import Spec
from ..train import CheckpointError, load_state, save_state
from .search import CONTINUES

__all__ = ["method_trainable", "remote_teacher_logits", "student_trainable", "teacher_logits_task", "teacher_trainable"]

BARRIER_ENV = "SKD_TUNE_TEST_BARRIER"


def _barrier(stage: str, epoch: int) -> None:
    """The test-only barrier (module docstring); a no-op unless SKD_TUNE_TEST_BARRIER names this point."""
    setting = os.environ.get(BARRIER_ENV)
    if not setting:
        return
    where, at_stage, at_epoch = setting.rsplit(":", 2)
    if at_stage != stage or int(at_epoch) != epoch:
        return
    directory = Path(where)
    (directory / f"reached-{os.getpid()}-{epoch}").touch()
    while not (directory / "release").exists():
        time.sleep(0.05)


def _newer_state(known: dict | None, continues: list[str]) -> dict | None:
    """The latest complete checkpoint in this trial's own directory, or in those of the Ray trials it
    continues (`search.CONTINUES`), if it is later than `known` (the one Ray restored the trial from, None
    for none). Ray Tune snapshots its experiment every few seconds, not at every report: a trial restored
    from an older snapshot finds here the checkpoints it wrote after it (its last epoch's, if it ended),
    and a trial that takes over one the snapshot missed, that trial's. A checkpoint cut short by the
    kill is passed over."""
    import pyarrow.fs as pafs

    storage = tune.get_context().get_storage()
    fs, trial_dir = storage.storage_filesystem, storage.trial_fs_path
    stage_dir, name = posixpath.split(trial_dir)
    dirs = [trial_dir] + [f"{stage_dir}/{name.rsplit('_', 1)[0]}_{ray_id}" for ray_id in continues]
    newest, done = None, int(known["epoch"]) if known else 0
    for directory in dirs:
        for entry in fs.get_file_info(pafs.FileSelector(directory, allow_not_found=True)):
            if entry.type != pafs.FileType.Directory or not entry.base_name.startswith("checkpoint_"):
                continue
            try:
                with tune.Checkpoint(entry.path, filesystem=fs).as_directory() as d:
                    state = load_state(d)
            except CheckpointError:
                continue
            if int(state["epoch"]) > max(done, int(newest["epoch"]) if newest else 0):
                newest = state
    return newest


def _split_config(config: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Ray's config: the trial's parameters, and the Ray trials it continues (`search.CONTINUES`)."""
    params = dict(config)
    return params, list(params.pop(CONTINUES, None) or [])


def _plain_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v.item() if isinstance(v, np.generic) else v for k, v in metrics.items()}


def _report_epochs(run: TrainingRun, stage: str, policy: ReportPolicy, continues: list[str] = ()) -> None:
    """The shared epoch loop: resume from the latest checkpoint (`_newer_state`, else Tune's), then train,
    reporting when `policy` says so (with a checkpoint, or not) the metrics of every epoch since the last
    report (`EPOCHS_KEY`); every checkpoint also carries the best epoch's weights and the metrics of every
    epoch so far. The epochs after the checkpoint Ray restored from (which Ray's snapshot does not hold)
    are reported again as they were, with a checkpoint: nothing trained again, the same rows in the
    results tables, and the scheduler and Optuna see them in order. A student's epochs also report its
    cost (`run.cost`, names.COST_METRICS): the same numbers every epoch, so both results tables hold them."""
    known, history = None, []
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            known = load_state(d)
    state = _newer_state(known, list(continues)) or known
    start_epoch = run.restore(state) if state is not None else 0
    if state is not None:
        history = list(state.get("history", []))
        replay = [m for m in history if int(known["epoch"] if known else 0) < int(m["epoch"]) <= start_epoch]
        if replay:
            _report(run, replay, history, checkpoint=True)
            policy.reported(checkpoint=True)
    pending: list[dict[str, Any]] = []
    for metrics, _ in run.epochs(start_epoch):
        if run.cost:
            metrics = {**metrics, **run.cost}
        metrics = _plain_metrics(metrics)
        history.append(metrics)
        pending.append(metrics)
        epoch = int(metrics["epoch"])
        _barrier(stage, epoch)
        if policy.report_due(epoch):
            save = policy.checkpoint_due(epoch)
            _report(run, pending, history, checkpoint=save)
            policy.reported(checkpoint=save)
            pending = []


def _report(run: TrainingRun, epochs: list[dict[str, Any]], history: list[dict[str, Any]], checkpoint: bool) -> None:
    """Report `epochs` (the last one's metrics at the top, all of them under EPOCHS_KEY), with a checkpoint
    of the run as it is now (at the last of them) if `checkpoint`."""
    result = {**epochs[-1], EPOCHS_KEY: list(epochs)}
    if not checkpoint:
        tune.report(result)
        return
    with tempfile.TemporaryDirectory() as d:
        save_state(d, run.model, run.optimizer, int(epochs[-1]["epoch"]), run.best, history)
        tune.report(result, checkpoint=tune.Checkpoint.from_directory(d))


def _policy(spec: Spec, epochs: int, decision_epochs: frozenset[int] = frozenset()) -> ReportPolicy:
    s = spec.search
    return ReportPolicy(s.checkpoint_interval_s, epochs, decision_epochs, s.report_interval_s)


def teacher_trainable(config: dict[str, Any], *, spec: Spec, data: Dataset) -> None:
    """One teacher trial; `config` holds the teacher search's parameters (beta, t_aux, lr, ...)."""
    config, continues = _split_config(config)
    run = build_teacher_run(spec, data, config)
    _report_epochs(run, "teacher", _policy(spec, run.epochs_total), continues)


def student_trainable(
    config: dict[str, Any],
    *,
    spec: Spec,
    data: Dataset,
    teacher_logits: np.ndarray | None,
    fixed: dict[str, Any] | None = None,
    stage: str = "student",
) -> None:
    """One student of a search: `config` holds the searched parameters (temperature, w_skd, ...), `fixed`
    what the search holds constant (a method's weights: w_skd = 0 for KD), `stage` the search it is in."""
    config, continues = _split_config(config)
    student = spec.student_for({**config, **(fixed or {})})
    run = build_student_run(student, spec, data, teacher_logits, seed=spec.seed)
    decisions = spec.search.decision_epochs(student.epochs)  # ASHA's rungs: a stopped trial keeps its best
    _report_epochs(run, stage, _policy(spec, student.epochs, decisions), continues)


def method_trainable(
    config: dict[str, Any],
    *,
    spec: Spec,
    data: Dataset,
    teacher_logits: np.ndarray | None,
    method_params: dict[str, dict[str, Any]],
) -> None:
    """One run of the method table: `config` = {"method": "no-KD" | "KD" | "SKD", "seed": int}.

    Trains the method's student (`method_params[method]`, see methods.py) with that seed and reports,
    with its last epoch, the test metrics of its best epoch (chosen on validation). FIFO: no rungs."""
    student = spec.student_for(method_params[config["method"]])
    run = build_student_run(student, spec, data, teacher_logits, seed=int(config["seed"]), test=True)
    _report_epochs(run, "methods", _policy(spec, student.epochs))


def teacher_logits_task(spec: Spec, data: Dataset, checkpoint_dir: str, device=None) -> dict[str, np.ndarray]:
    """Logits of the frozen teacher for every train, val and test sample (computed once), from its
    checkpoint (a local path, or a URI on shared storage). Run as a Ray task with the teacher's
    resources (a GPU where it asks for one), or in the driver for a CPU-only teacher (`device` CPU)."""
    _barrier("teacher_logits", 0)
    with tune.Checkpoint(checkpoint_dir).as_directory() as local:
        state = load_state(local)
    return teacher_logits(spec, data, state, device)


def remote_teacher_logits(spec: Spec, data: Dataset, checkpoint_dir: str) -> dict[str, np.ndarray]:
    """Run `teacher_logits_task` on the cluster with the teacher's CPU/GPU request and wait for it."""
    res = spec.teacher.resources
    task = ray.remote(num_cpus=res.cpu, num_gpus=res.gpu, max_retries=1)(teacher_logits_task)
    try:
        return ray.get(task.remote(spec, data, checkpoint_dir))
    except ray.exceptions.RayTaskError as e:
        if isinstance(e.cause, CheckpointError):
            raise e.cause from None
        raise
