"""What a trial trains, built from the spec in plain torch (no Ray: `tune/trainables.py` reports it).

`build_teacher_run` and `build_student_run` return a `TrainingRun`: the model, the optimiser, the
loss, the splits on the device, the curriculum; `run.epochs(start)` yields each epoch's metrics
(`train.fit`) and `run.best` keeps the best epoch's weights by the search metric. The benchmarks call
these same functions, so what they time is what a trial does.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from .augment import num_views
from .cost import measure_cost
from .curriculum import LOSS_LEVELS, curriculum_order, level_ends, quantile_levels, teacher_difficulty
from .data import Dataset, train_rows
from .losses import DistillationLoss, TeacherLoss
from .models import build_model
from .spec import Spec, StudentSpec
from .train import (
    Curriculum,
    DeviceSplit,
    LossFn,
    best_weights,
    evaluate,
    fit,
    make_optimizer,
    membership_for,
    pick_device,
    predict_logits,
    set_threads,
    student_loss,
    teacher_loss,
    to_device,
)

__all__ = [
    "TrainingRun",
    "build_student_run",
    "build_teacher_run",
    "clean_view",
    "device_split",
    "group_logits",
    "teacher_logits",
]


def device_split(data: Dataset, name: str, device: torch.device, rows: np.ndarray | None = None) -> DeviceSplit:
    """Split `name` (only its `rows`, if given) on the device, labelled with the teacher's target groups
    (see `Dataset.targets`)."""
    split = data.split(name)
    x, targets = split.x, data.targets(name)
    if rows is not None:
        x, targets = x[rows], targets[rows]
    return DeviceSplit.from_numpy(x, targets, data.group_to_class, data.scale, device, data.outputs_per_group)


def _model(
    name: str, data: Dataset, pretrained: bool, device: torch.device | None = None, width: float = 1.0
) -> nn.Module:
    """The registered model `name` for the data's outputs and inputs (the teacher: always width 1)."""
    model = build_model(name, data.num_outputs, data.input_shape, data.mean, data.std, pretrained, width=width)
    return model if device is None else to_device(model, device, len(data.input_shape) == 3)


def group_logits(logits: np.ndarray, k: int) -> np.ndarray:
    """(N, G*k) output logits -> (N, G) logits of their groups (logsumexp over each group's k outputs)."""
    if k == 1:
        return logits
    t = torch.as_tensor(np.asarray(logits, dtype=np.float32))
    return torch.logsumexp(t.reshape(len(t), -1, k), dim=2).numpy()


def _rows_of(values: np.ndarray | None, rows: np.ndarray) -> np.ndarray | None:
    """The `rows` of a per-training-sample array (teacher logits, difficulties), or None."""
    return None if values is None else np.asarray(values)[rows]


def _curriculum(role_spec: Any, difficulty: np.ndarray | None, seed: int, device: torch.device) -> Curriculum | None:
    """The role's curriculum over the training samples (N,) graded by `difficulty` (lower = easier): their
    order, easiest first, and its difficulty levels (`curriculum.level_ends`); None without one."""
    c = role_spec.curriculum
    if c.pacing == "none" or difficulty is None:
        return None
    order = curriculum_order(difficulty, seed)
    ends = level_ends(difficulty, order)
    return Curriculum(c.pacing, c.start, c.full_at, torch.from_numpy(order).to(device), ends)


@dataclass
class TrainingRun:
    """One trial's training, ready to run: `epochs(start)` trains and yields each epoch's metrics, and
    keeps `best` ({"model", "epoch", "value"}: the best epoch by `metric` and `mode`). `cost`: the
    student's `cost.measure_cost` (names.COST_METRICS), measured before training; None for a teacher."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    loss_fn: LossFn
    train: DeviceSplit
    val: DeviceSplit
    data: Dataset
    epochs_total: int
    batch_size: int
    seed: int
    metric: str
    mode: str
    curriculum: Curriculum | None = None
    augment: bool = False
    test: DeviceSplit | None = None
    best: dict[str, Any] | None = None
    cost: dict[str, float] | None = None
    membership: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        self.membership = membership_for(self.data.output_to_class, self.train.x.device)

    def restore(self, state: dict[str, Any]) -> int:
        """Continue from a checkpoint's state (`train.load_state`); returns the epochs already done."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.best = state.get("best")
        return int(state["epoch"])

    def _better(self, value: float) -> bool:
        if self.best is None or math.isnan(self.best["value"]):
            return not (self.best is not None and math.isnan(value))
        return value > self.best["value"] if self.mode == "max" else value < self.best["value"]

    def epochs(self, start_epoch: int = 0) -> Iterator[tuple[dict[str, float], bool]]:
        """Train from `start_epoch`; yield (metrics, whether this epoch became the best). The last
        epoch's metrics also hold the `test_*` metrics of the best weights when there is a test split."""
        d = self.data
        for metrics in fit(
            self.model, self.optimizer, self.loss_fn, self.train, self.val, self.membership, d.positive_class,
            self.epochs_total, self.batch_size, self.seed, start_epoch, curriculum=self.curriculum, augment=self.augment,
        ):  # fmt: skip
            value = float(metrics.get(self.metric, math.nan))
            improved = self._better(value)
            if improved:
                weights = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
                self.best = {"model": weights, "epoch": int(metrics["epoch"]), "value": value}
            if self.test is not None and int(metrics["epoch"]) == self.epochs_total:
                metrics = {**metrics, **self.test_metrics()}
            yield metrics, improved

    def test_metrics(self) -> dict[str, float]:
        """Test-split metrics of the best epoch's weights (the model's own state is put back afterwards)."""
        current = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        if self.best is not None:
            self.model.load_state_dict(self.best["model"])
        out = evaluate(self.model, self.test, self.membership, self.data.positive_class, prefix="test_")
        self.model.load_state_dict(current)
        out["best_epoch"] = int(self.best["epoch"]) if self.best is not None else -1  # -1: no finite metric
        return out


def build_teacher_run(
    spec: Spec, data: Dataset, params: dict[str, Any], device: torch.device | None = None
) -> TrainingRun:
    """The teacher: cross-entropy on the known subclass labels (one output each), or, with several
    outputs per group (invented subclasses), `TeacherLoss` = CE on the groups + beta * auxiliary loss.
    `params`: the teacher search's values (`search.teacher.space`: beta, t_aux, lr, ...)."""
    teacher = spec.teacher_for(params)
    set_threads(teacher.resources.cpu)
    torch.manual_seed(spec.seed)
    device = device or pick_device()
    rows = train_rows(data.train.subclass, teacher.train_fraction, spec.seed, "teacher.train_fraction")
    train, val = device_split(data, "train", device, rows), device_split(data, "val", device)
    model = _model(teacher.model, data, teacher.pretrained, device)
    objective = None
    if data.outputs_per_group > 1:
        groups = membership_for(data.output_to_group, device)  # (G, S_out): the outputs of each group
        objective = TeacherLoss(groups, teacher.beta, teacher.t_aux)
    return TrainingRun(
        model, make_optimizer(model, teacher.lr, teacher.weight_decay), teacher_loss(train, objective), train, val,
        data, teacher.epochs, teacher.batch_size, spec.seed, spec.search.metric, spec.search.mode,
        _curriculum(teacher, _rows_of(data.train.difficulty, rows), spec.seed, device), teacher.augment,
    )  # fmt: skip


def build_student_run(
    student: StudentSpec,
    spec: Spec,
    data: Dataset,
    teacher_logits: np.ndarray | None,
    seed: int,
    device: torch.device | None = None,
    test: bool = False,
) -> TrainingRun:
    """A student (`spec.student_for(params)`): `DistillationLoss` against the cached teacher logits of the
    training split (N_train, S), indexed per batch: no teacher forward pass happens in a trial. With
    `test`, the last epoch is also scored on the test split (the method table's runs). The model is built
    at `student.width`, and its cost (`run.cost`, `cost.measure_cost` on the trial's device and threads)
    is measured once, before training."""
    set_threads(student.resources.cpu)
    torch.manual_seed(seed)
    device = device or pick_device()
    rows = train_rows(data.train.subclass, spec.data.train_fraction, spec.seed)
    train, val = device_split(data, "train", device, rows), device_split(data, "val", device)
    teacher_logits = _rows_of(teacher_logits, rows)
    t_logits = None
    if teacher_logits is not None and (student.w_kd > 0 or student.w_skd > 0):
        t_logits = torch.from_numpy(np.array(teacher_logits, dtype=np.float32, copy=True)).to(device)
    objective = DistillationLoss(
        membership_for(data.output_to_class, device), student.temperature, student.w_ce, student.w_kd, student.w_skd
    )
    model = _model(student.model, data, student.pretrained, device, width=student.width)
    # The optimiser first: building it imports torch._dynamo once per process, which the cost's FLOP
    # counter needs too, so the measurement itself stays cheap (a few ms for the digits MLP).
    optimizer = make_optimizer(model, student.lr, student.weight_decay)
    cost = measure_cost(model, data.input_shape, device)
    # Difficulty: annotator agreement where the data has it, else the teacher's loss on each sample
    # (binned into LOSS_LEVELS quantile levels for the `levels` pacing, which admits whole levels).
    difficulty = _rows_of(data.train.difficulty, rows)
    if difficulty is None and teacher_logits is not None:
        difficulty = teacher_difficulty(
            group_logits(clean_view(teacher_logits), data.outputs_per_group), data.targets("train")[rows]
        )
        if student.curriculum.pacing == "levels":
            difficulty = quantile_levels(difficulty, LOSS_LEVELS)
    return TrainingRun(
        model, optimizer, student_loss(train, t_logits, objective),
        train, val, data, student.epochs, student.batch_size, seed, spec.search.metric, spec.search.mode,
        _curriculum(student, difficulty, seed, device), student.augment,
        device_split(data, "test", device) if test else None, cost=cost,
    )  # fmt: skip


def teacher_logits(spec: Spec, data: Dataset, state: dict, device: torch.device | None = None) -> dict[str, np.ndarray]:
    """Logits of the frozen teacher (the best weights of the checkpoint `state`) for every split: (N, S)
    each; with `teacher_logits: views`, the training split's are (N, V, S), the logits of each image's V
    views (augment.py: 8 for square images, 4 flips otherwise; view 0 is the image itself). With
    `data.subclasses: clustered` (`data` is then `class_view`: class logits), also "embeddings": {split:
    (N, D)}, the penultimate embeddings that teachers/clusters.py clusters."""
    set_threads(spec.teacher.resources.cpu)
    device = device or pick_device()
    model = _model(spec.teacher.model, data, False)
    model.load_state_dict(best_weights(state))
    model = to_device(model, device, len(data.input_shape) == 3)
    if spec.data.clustered:  # a class-output teacher (data: `class_view`): its embeddings too, to cluster
        from .teachers.checkpoint import predict_outputs

        pairs = {name: predict_outputs(model, data.split(name).x, data.scale, device, True) for name in _SPLITS}
        return {name: pairs[name][0] for name in _SPLITS} | {"embeddings": {name: pairs[name][1] for name in _SPLITS}}
    out = {name: predict_logits(model, device_split(data, name, device)).numpy() for name in _SPLITS}
    if spec.teacher_logits == "views":
        train = device_split(data, "train", device)
        views = range(num_views(*data.input_shape[1:]))
        out["train"] = np.stack([predict_logits(model, train, view=v).numpy() for v in views], axis=1)
    return out


_SPLITS = ("train", "val", "test")


def clean_view(logits: np.ndarray) -> np.ndarray:
    """The logits of the images themselves: (N, S) from cached logits that are (N, S) or (N, V, S) (views)."""
    return logits[:, 0] if logits.ndim == 3 else logits
