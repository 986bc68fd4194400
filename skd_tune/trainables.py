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
from .losses import DistillationLoss
from .models import build_model
from .spec import Spec, TeacherSpec
from .train import (
    CheckpointError,
    Curriculum,
    DeviceSplit,
    best_weights,
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

__all__ = ["remote_teacher_logits", "student_trainable", "teacher_logits_task", "teacher_trainable"]

def _splits(data: Dataset, device) -> tuple[DeviceSplit, DeviceSplit]:
    train = DeviceSplit.from_numpy(data.train.x, data.train.subclass, data.subclass_to_class, data.scale, device)
    val = DeviceSplit.from_numpy(data.val.x, data.val.subclass, data.subclass_to_class, data.scale, device)
    return train, val


def _curriculum(role_spec, difficulty: np.ndarray | None, seed: int, device) -> Curriculum | None:
    c = role_spec.curriculum
    if c.pacing == "none" or difficulty is None:
        return None
    order = torch.from_numpy(curriculum_order(difficulty, seed)).to(device)
    return Curriculum(c.pacing, c.start, c.full_at, order)


def _run(model, optimizer, loss_fn, train, val, data: Dataset, epochs: int, batch_size: int, seed: int,
         metric: str, mode: str, curriculum: Curriculum | None = None, augment: bool = False) -> None:
    """The shared epoch loop: resume from Tune's checkpoint, then report every epoch with a checkpoint
    that also carries the best epoch's weights (by `metric` and `mode`)."""
    start_epoch, best = 0, None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            state = load_state(d)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch = int(state["epoch"])
        best = state.get("best")
    membership = membership_for(data.subclass_to_class, train.x.device)
    for metrics in fit(model, optimizer, loss_fn, train, val, membership, data.positive_class, epochs, batch_size, seed,
                       start_epoch, curriculum=curriculum, augment=augment):
        value = float(metrics.get(metric, math.nan))
        better = best is None or math.isnan(best["value"]) or (value > best["value"] if mode == "max" else value < best["value"])
        if better and not (best is not None and math.isnan(value)):
            best = {"model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
                    "epoch": int(metrics["epoch"]), "value": value}
        with tempfile.TemporaryDirectory() as d:
            save_state(d, model, optimizer, int(metrics["epoch"]), best)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))


def teacher_trainable(config: dict[str, Any], *, spec: Spec, data: Dataset) -> None:
    """Train the teacher on the subclass labels (cross-entropy over S outputs)."""
    teacher = TeacherSpec.model_validate({**spec.teacher.model_dump(), **config})
    set_threads(teacher.resources.cpu)
    torch.manual_seed(spec.seed)
    device = pick_device()
    train, val = _splits(data, device)
    model = to_device(build_model(teacher.model, data.num_subclasses, data.input_shape, data.mean, data.std, teacher.pretrained),
                      device, len(data.input_shape) == 3)
    optimizer = make_optimizer(model, teacher.lr, teacher.weight_decay)
    curriculum = _curriculum(teacher, data.train.difficulty, spec.seed, device)
    _run(model, optimizer, teacher_loss(train), train, val, data, teacher.epochs, teacher.batch_size, spec.seed,
         spec.search.metric, spec.search.mode, curriculum, teacher.augment)


def student_trainable(config: dict[str, Any], *, spec: Spec, data: Dataset, teacher_logits: np.ndarray | None) -> None:
    """Train one student of the search: `config` holds the searched parameters (temperature, w_skd, ...).

    `teacher_logits` are the cached subclass logits of the training split (N_train, S), indexed per
    batch: no teacher forward pass happens inside a trial.
    """
    student = spec.student_for(config)
    set_threads(student.resources.cpu)
    torch.manual_seed(spec.seed)
    device = pick_device()
    train, val = _splits(data, device)
    t_logits = None
    if teacher_logits is not None and (student.w_kd > 0 or student.w_skd > 0):
        t_logits = torch.from_numpy(np.array(teacher_logits, dtype=np.float32, copy=True)).to(device)
    objective = DistillationLoss(
        membership_for(data.subclass_to_class, device), student.temperature, student.w_ce, student.w_kd, student.w_skd
    )
    model = to_device(build_model(student.model, data.num_subclasses, data.input_shape, data.mean, data.std, student.pretrained),
                      device, len(data.input_shape) == 3)
    optimizer = make_optimizer(model, student.lr, student.weight_decay)
    # Difficulty: annotator agreement where the data has it, else the teacher's loss on each sample.
    difficulty = data.train.difficulty
    if difficulty is None and teacher_logits is not None:
        difficulty = teacher_difficulty(teacher_logits, data.train.subclass)
    curriculum = _curriculum(student, difficulty, spec.seed, device)
    _run(model, optimizer, student_loss(train, t_logits, objective), train, val, data, student.epochs,
         student.batch_size, spec.seed, spec.search.metric, spec.search.mode, curriculum, student.augment)


def teacher_logits_task(spec: Spec, data: Dataset, checkpoint_dir: str) -> dict[str, np.ndarray]:
    """Subclass logits of the frozen teacher for every train, val and test sample (computed once).

    Run as a Ray task with the teacher's resources, so the forward passes use the GPU where there is one.
    """
    set_threads(spec.teacher.resources.cpu)
    device = pick_device()
    model = build_model(spec.teacher.model, data.num_subclasses, data.input_shape, data.mean, data.std, False)
    model.load_state_dict(best_weights(load_state(checkpoint_dir)))
    model = to_device(model, device, len(data.input_shape) == 3)
    out = {}
    for name in ("train", "val", "test"):
        split = data.split(name)
        ds = DeviceSplit.from_numpy(split.x, split.subclass, data.subclass_to_class, data.scale, device)
        out[name] = predict_logits(model, ds).numpy()
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
