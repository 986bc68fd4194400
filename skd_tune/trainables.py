"""Ray Tune function trainables wrapping the plain loops of `train.py`.

Each trainable turns Ray's config dict into a typed spec on its first line, receives the dataset
(and the cached teacher logits) once through the object store (`tune.with_parameters`), reports
metrics every epoch with a checkpoint, and continues from `tune.get_checkpoint()` after a restore.
"""

from __future__ import annotations

import math
import tempfile
from typing import Any

import numpy as np
import ray
import torch
from ray import tune

from .curriculum import curriculum_order, teacher_difficulty
from .data import Dataset
from .losses import DistillationLoss, TeacherLoss
from .models import build_model
from .spec import Spec
from .train import (
    CheckpointError,
    CheckpointPolicy,
    Curriculum,
    DeviceSplit,
    best_weights,
    evaluate,
    fit,
    load_state,
    make_optimizer,
    membership_for,
    pick_device,
    predict_logits,
    save_state,
    set_threads,
    student_loss,
    teacher_loss,
    to_device,
)

__all__ = ["method_trainable", "remote_teacher_logits", "student_trainable", "teacher_logits_task", "teacher_trainable"]


def _device_split(data: Dataset, name: str, device) -> DeviceSplit:
    """Split `name` on the device, labelled with the teacher's target groups (see `Dataset.targets`)."""
    split = data.split(name)
    return DeviceSplit.from_numpy(
        split.x, data.targets(name), data.group_to_class, data.scale, device, data.outputs_per_group
    )


def _splits(data: Dataset, device) -> tuple[DeviceSplit, DeviceSplit]:
    return _device_split(data, "train", device), _device_split(data, "val", device)


def _model(name: str, data: Dataset, pretrained: bool, device=None):
    model = build_model(name, data.num_outputs, data.input_shape, data.mean, data.std, pretrained)
    return model if device is None else to_device(model, device, len(data.input_shape) == 3)


def group_logits(logits: np.ndarray, k: int) -> np.ndarray:
    """(N, G*k) output logits -> (N, G) logits of their groups (logsumexp over each group's k outputs)."""
    if k == 1:
        return logits
    t = torch.as_tensor(np.asarray(logits, dtype=np.float32))
    return torch.logsumexp(t.reshape(len(t), -1, k), dim=2).numpy()


def _curriculum(role_spec, difficulty: np.ndarray | None, seed: int, device) -> Curriculum | None:
    c = role_spec.curriculum
    if c.pacing == "none" or difficulty is None:
        return None
    order = torch.from_numpy(curriculum_order(difficulty, seed)).to(device)
    return Curriculum(c.pacing, c.start, c.full_at, order)


def _run(
    model,
    optimizer,
    loss_fn,
    train,
    val,
    data: Dataset,
    epochs: int,
    batch_size: int,
    seed: int,
    metric: str,
    mode: str,
    policy: CheckpointPolicy,
    curriculum: Curriculum | None = None,
    augment: bool = False,
    test: DeviceSplit | None = None,
) -> None:
    """The shared epoch loop: resume from Tune's checkpoint, then report every epoch, with a checkpoint
    when `policy` says so; every checkpoint also carries the best epoch's weights (by `metric`, `mode`).

    With a `test` split, the last epoch's report also holds `test_*` metrics of the best epoch's
    weights (chosen on validation only) and that epoch's number as `best_epoch`."""
    start_epoch, best, best_changed = 0, None, False
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            state = load_state(d)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch = int(state["epoch"])
        best = state.get("best")
    membership = membership_for(data.output_to_class, train.x.device)
    for metrics in fit(
        model,
        optimizer,
        loss_fn,
        train,
        val,
        membership,
        data.positive_class,
        epochs,
        batch_size,
        seed,
        start_epoch,
        curriculum=curriculum,
        augment=augment,
    ):
        value = float(metrics.get(metric, math.nan))
        better = (
            best is None
            or math.isnan(best["value"])
            or (value > best["value"] if mode == "max" else value < best["value"])
        )
        if better and not (best is not None and math.isnan(value)):
            best = {
                "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
                "epoch": int(metrics["epoch"]),
                "value": value,
            }
            best_changed = True
        epoch = int(metrics["epoch"])
        if test is not None and epoch == epochs:
            metrics = {**metrics, **_test_metrics(model, best, test, membership, data.positive_class)}
        if not policy.due(epoch, best_changed):
            tune.report(metrics)
            continue
        with tempfile.TemporaryDirectory() as d:
            save_state(d, model, optimizer, epoch, best)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))
        policy.saved()
        best_changed = False


def _test_metrics(model, best: dict | None, test: DeviceSplit, membership, positive_class: int) -> dict[str, float]:
    """Test-split metrics of the best epoch's weights (the model's own state is put back afterwards)."""
    current = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if best is not None:
        model.load_state_dict(best["model"])
    out = evaluate(model, test, membership, positive_class, prefix="test_")
    model.load_state_dict(current)
    out["best_epoch"] = int(best["epoch"]) if best is not None else -1  # -1: no epoch had a finite metric
    return out


def teacher_trainable(config: dict[str, Any], *, spec: Spec, data: Dataset) -> None:
    """Train the teacher: cross-entropy on the known subclass labels (one output each), or, with several
    outputs per group (invented subclasses), `TeacherLoss` = CE on the groups + beta * auxiliary loss.

    `config` holds the teacher search's parameters (`search.teacher.space`: beta, t_aux, lr, ...)."""
    teacher = spec.teacher_for(config)
    set_threads(teacher.resources.cpu)
    torch.manual_seed(spec.seed)
    device = pick_device()
    train, val = _splits(data, device)
    model = _model(teacher.model, data, teacher.pretrained, device)
    optimizer = make_optimizer(model, teacher.lr, teacher.weight_decay)
    curriculum = _curriculum(teacher, data.train.difficulty, spec.seed, device)
    objective = None
    if data.outputs_per_group > 1:
        groups = membership_for(data.output_to_group, device)  # (G, S_out): the outputs of each group
        objective = TeacherLoss(groups, teacher.beta, teacher.t_aux)
    policy = CheckpointPolicy(spec.search.checkpoint_interval_s, teacher.epochs)  # the teacher's search is FIFO
    _run(
        model,
        optimizer,
        teacher_loss(train, objective),
        train,
        val,
        data,
        teacher.epochs,
        teacher.batch_size,
        spec.seed,
        spec.search.metric,
        spec.search.mode,
        policy,
        curriculum,
        teacher.augment,
    )


def student_trainable(config: dict[str, Any], *, spec: Spec, data: Dataset, teacher_logits: np.ndarray | None) -> None:
    """Train one student of the search: `config` holds the searched parameters (temperature, w_skd, ...).

    `teacher_logits` are the cached subclass logits of the training split (N_train, S), indexed per
    batch: no teacher forward pass happens inside a trial.
    """
    student = spec.student_for(config)
    _train_student(student, spec, data, teacher_logits, seed=spec.seed)


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
    with its last epoch, the test metrics of its best epoch (chosen on validation).
    """
    student = spec.student_for(method_params[config["method"]])
    _train_student(student, spec, data, teacher_logits, seed=int(config["seed"]), test=True)


def _train_student(
    student, spec: Spec, data: Dataset, teacher_logits: np.ndarray | None, seed: int, test: bool = False
) -> None:
    set_threads(student.resources.cpu)
    torch.manual_seed(seed)
    device = pick_device()
    train, val = _splits(data, device)
    t_logits = None
    if teacher_logits is not None and (student.w_kd > 0 or student.w_skd > 0):
        t_logits = torch.from_numpy(np.array(teacher_logits, dtype=np.float32, copy=True)).to(device)
    objective = DistillationLoss(
        membership_for(data.output_to_class, device), student.temperature, student.w_ce, student.w_kd, student.w_skd
    )
    model = _model(student.model, data, student.pretrained, device)
    optimizer = make_optimizer(model, student.lr, student.weight_decay)
    # Difficulty: annotator agreement where the data has it, else the teacher's loss on each sample.
    difficulty = data.train.difficulty
    if difficulty is None and teacher_logits is not None:
        difficulty = teacher_difficulty(group_logits(teacher_logits, data.outputs_per_group), data.targets("train"))
    curriculum = _curriculum(student, difficulty, seed, device)
    test_split = None
    if test:
        test_split = _device_split(data, "test", device)
    # The method table's runs are FIFO: no scheduler stops them early.
    decisions = frozenset() if test else spec.search.decision_epochs(student.epochs)
    policy = CheckpointPolicy(spec.search.checkpoint_interval_s, student.epochs, decisions)
    _run(
        model,
        optimizer,
        student_loss(train, t_logits, objective),
        train,
        val,
        data,
        student.epochs,
        student.batch_size,
        seed,
        spec.search.metric,
        spec.search.mode,
        policy,
        curriculum,
        student.augment,
        test_split,
    )


def teacher_logits_task(spec: Spec, data: Dataset, checkpoint_dir: str, device=None) -> dict[str, np.ndarray]:
    """Subclass logits of the frozen teacher for every train, val and test sample (computed once).

    Run as a Ray task with the teacher's resources, so the forward passes use the GPU where there is one
    (`device` None: the task's device); or in the driver for a CPU-only teacher, with `device` = CPU.
    """
    set_threads(spec.teacher.resources.cpu)
    device = pick_device() if device is None else device
    model = _model(spec.teacher.model, data, False)
    with tune.Checkpoint(checkpoint_dir).as_directory() as local:  # a local path, or a URI on shared storage
        model.load_state_dict(best_weights(load_state(local)))
    model = to_device(model, device, len(data.input_shape) == 3)
    out = {}
    for name in ("train", "val", "test"):
        out[name] = predict_logits(model, _device_split(data, name, device)).numpy()
    return out


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
