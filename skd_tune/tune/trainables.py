"""Ray Tune function trainables: the trainings of `recipes.py`, reported to Tune every epoch.

Each trainable turns Ray's config dict into a typed spec on its first line, receives the dataset (and
the cached teacher logits) once through the object store (`tune.with_parameters`), reports metrics
every epoch with a checkpoint when the `CheckpointPolicy` says so, and continues from
`tune.get_checkpoint()` after a restore.

Test-only switch (off unless set): `SKD_TUNE_TEST_BARRIER=DIR:STAGE:EPOCH` makes every trial of STAGE
(teacher, student, methods) that reports epoch EPOCH write `DIR/reached-<pid>-<epoch>` and wait until
`DIR/release` exists (STAGE teacher_logits, EPOCH 0: the teacher-logits computation, before it
starts), so a test can stop a run at a known point instead of polling its output.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import ray
from ray import tune

from ..data import Dataset
from ..recipes import TrainingRun, build_student_run, build_teacher_run, teacher_logits
from ..spec import Spec
from ..train import CheckpointError, CheckpointPolicy, load_state, save_state

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


def _report_epochs(run: TrainingRun, stage: str, policy: CheckpointPolicy) -> None:
    """The shared epoch loop: resume from Tune's checkpoint, then report every epoch, with a checkpoint
    when `policy` says so; every checkpoint also carries the best epoch's weights. A student's epochs also
    report its cost (`run.cost`, names.COST_METRICS): the same numbers every epoch, so both results tables
    hold them."""
    start_epoch, best_changed = 0, False
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            start_epoch = run.restore(load_state(d))
    for metrics, improved in run.epochs(start_epoch):
        if run.cost:
            metrics = {**metrics, **run.cost}
        best_changed = best_changed or improved
        epoch = int(metrics["epoch"])
        _barrier(stage, epoch)
        if not policy.due(epoch, best_changed):
            tune.report(metrics)
            continue
        with tempfile.TemporaryDirectory() as d:
            save_state(d, run.model, run.optimizer, epoch, run.best)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))
        policy.saved()
        best_changed = False


def teacher_trainable(config: dict[str, Any], *, spec: Spec, data: Dataset) -> None:
    """One teacher trial; `config` holds the teacher search's parameters (beta, t_aux, lr, ...)."""
    run = build_teacher_run(spec, data, config)
    _report_epochs(run, "teacher", CheckpointPolicy(spec.search.checkpoint_interval_s, run.epochs_total))


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
    student = spec.student_for({**config, **(fixed or {})})
    run = build_student_run(student, spec, data, teacher_logits, seed=spec.seed)
    decisions = spec.search.decision_epochs(student.epochs)  # ASHA's rungs: a stopped trial keeps its best
    _report_epochs(run, stage, CheckpointPolicy(spec.search.checkpoint_interval_s, student.epochs, decisions))


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
    _report_epochs(run, "methods", CheckpointPolicy(spec.search.checkpoint_interval_s, student.epochs))


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
