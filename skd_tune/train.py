"""Plain torch training loops for teacher and student (no Ray here: recipes.py builds what a trial
trains from the spec, and tune/trainables.py reports it to Ray Tune).

The whole split lives on the device as one tensor (uint8 where the source is uint8); batches are
indexed there and scaled to [0, 1] on the fly, so there are no DataLoader workers and no per-batch
host-to-device copies. The device is picked at run time; AMP (bf16, or fp16 with a grad scaler) is
used on CUDA only.
"""

from __future__ import annotations

import contextlib
import math
import os
import pickle
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .augment import apply_view, augment_images
from .curriculum import epoch_size
from .errors import CheckpointError, first_line
from .losses import DistillationLoss, TeacherLoss, class_logits, class_membership
from .metrics import classification_metrics

__all__ = [
    "STATE_FILE",
    "CheckpointError",
    "Curriculum",
    "DeviceSplit",
    "LossFn",
    "evaluate",
    "fit",
    "pick_device",
    "predict_logits",
    "best_weights",
    "load_state",
    "load_tensors",
    "make_optimizer",
    "membership_for",
    "save_state",
    "set_threads",
    "to_device",
    "student_loss",
    "teacher_loss",
    "train_one_epoch",
]

STATE_FILE = "state.pt"  # a training checkpoint: model, optimizer, epoch (tensors and plain values)

# loss_fn(subclass_logits (B, S), batch indices (B,) into the training split, the view (B,) each image was
# given by the augmentation (augment.py), or None for clean images) -> (loss, parts)
LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], tuple[torch.Tensor, dict[str, torch.Tensor]]]


def pick_device() -> torch.device:
    """CUDA when a GPU is visible to this process (Ray hides GPUs a trial did not ask for), else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def set_threads(cpus: float) -> int:
    """Give torch as many intra-op threads as the trial's CPU share, so concurrent trials don't fight."""
    n = max(1, int(math.floor(cpus)))
    torch.set_num_threads(n)
    os.environ["OMP_NUM_THREADS"] = str(n)
    return n


@dataclass
class DeviceSplit:
    """One split on the device: raw inputs `x` (N, ...) and labels; `batch(idx)` gives [0, 1] floats.

    `subclass` holds the teacher's target group of each sample (its known subclass, or its class when
    the subclasses are invented); the models have `k` consecutive outputs per group."""

    x: torch.Tensor
    subclass: torch.Tensor
    classes: torch.Tensor
    scale: float
    k: int = 1

    @classmethod
    def from_numpy(
        cls, x: np.ndarray, subclass: np.ndarray, subclass_to_class: np.ndarray, scale: float, device, k: int = 1
    ) -> DeviceSplit:
        # Arrays from Ray's object store are read-only, and the inputs are only ever read (`batch` gathers
        # rows into a new tensor): on the CPU the tensor shares the array, so the trials of a node share
        # one copy of the data (the object store's) instead of one each (torch warns for read-only arrays).
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            xt = torch.from_numpy(np.asarray(x))
        if torch.device(device).type == "cuda":
            xt = xt.pin_memory()  # one pinned copy makes the single host-to-device transfer faster
        xt = xt.to(device, non_blocking=True)
        sub = torch.from_numpy(np.array(subclass, dtype=np.int64, copy=True)).to(device)
        s2c = torch.as_tensor(np.array(subclass_to_class, dtype=np.int64, copy=True), device=device)
        return cls(xt, sub, s2c[sub], float(scale), int(k))

    def __len__(self) -> int:
        return len(self.subclass)

    def batch(self, idx: torch.Tensor) -> torch.Tensor:
        return self.x[idx].float().mul_(self.scale)


def _autocast(device: torch.device):
    if device.type != "cuda":
        return contextlib.nullcontext(), None
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    return torch.autocast("cuda", dtype=dtype), scaler


def train_one_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: DeviceSplit,
    loss_fn: LossFn,
    batch_size: int,
    seed: int,
    order: torch.Tensor | None = None,
    augment: bool = False,
) -> dict[str, float]:
    """One pass over `data` (or over the indices `order`, shuffled) in batches; returns mean loss parts.

    The shuffle (and the augmentation, if `augment`) is drawn from `seed` alone, so a resumed epoch sees
    the batches it would have seen.
    """
    device = data.x.device
    model.train()
    idx_all = order.to(device) if order is not None else torch.arange(len(data), device=device)
    g = torch.Generator().manual_seed(int(seed))
    perm = idx_all[torch.randperm(len(idx_all), generator=g).to(device)]
    g_aug = torch.Generator(device=device).manual_seed(int(seed)) if augment and data.x.dim() == 4 else None
    channels_last = device.type == "cuda" and data.x.dim() == 4
    autocast, scaler = _autocast(device)
    totals: dict[str, torch.Tensor] = {}
    n_batches = 0
    for start in range(0, len(perm), batch_size):
        idx = perm[start : start + batch_size]
        if len(idx) < 2 and len(perm) > 1:
            continue  # a batch of one breaks batch norm; its sample is seen next epoch
        x, view = data.batch(idx), None
        if g_aug is not None:
            x, view = augment_images(x, g_aug)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast:
            out = model(x)
        loss, parts = loss_fn(out.float(), idx, view)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        parts = {"loss": loss.detach(), **parts}
        for k, v in parts.items():
            totals[k] = totals.get(k, 0) + v
        n_batches += 1
    return {f"train_{k}": float(v) / max(n_batches, 1) for k, v in totals.items()}


@torch.no_grad()
def predict_logits(model: nn.Module, data: DeviceSplit, batch_size: int = 512, view: int = 0) -> torch.Tensor:
    """Subclass logits (N, S) of every sample, in order, as float32 on the CPU; of each image's `view`
    (augment.py: 0 the image itself, 1..7 its flips and turns)."""
    model.eval()
    autocast, _ = _autocast(data.x.device)
    outs = []
    for start in range(0, len(data), batch_size):
        idx = torch.arange(start, min(start + batch_size, len(data)), device=data.x.device)
        x = data.batch(idx)
        if view:
            x = apply_view(x, view)
        if x.is_cuda and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast:
            outs.append(model(x).float())
    return torch.cat(outs).cpu()


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: DeviceSplit,
    membership: torch.Tensor,
    positive_class: int,
    prefix: str = "val_",
    batch_size: int = 512,
) -> dict[str, float]:
    """Class metrics (f1, accuracy, auc, precision, recall), class CE and subclass accuracy on `data`."""
    logits = predict_logits(model, data, batch_size)
    cls = class_logits(logits, membership.cpu())
    y = data.classes.cpu()
    metrics = classification_metrics(y.numpy(), torch.softmax(cls, dim=1).numpy(), positive_class)
    metrics["loss"] = float(F.cross_entropy(cls, y))
    # the output's group (known subclass, or class when invented) against the sample's
    metrics["subclass_accuracy"] = float((logits.argmax(1) // data.k == data.subclass.cpu()).float().mean())
    return {prefix + k: v for k, v in metrics.items()}


def teacher_loss(train: DeviceSplit, objective: TeacherLoss | None = None) -> LossFn:
    """Teacher objective: cross-entropy on the subclass labels (one output per known subclass), or
    `objective` (a `TeacherLoss`: CE on each group's logsumexp plus the auxiliary loss) when the teacher
    has several outputs per group."""

    def loss_fn(out: torch.Tensor, idx: torch.Tensor, view: torch.Tensor | None = None):
        if objective is not None:
            return objective(out, train.subclass[idx])
        ce = F.cross_entropy(out, train.subclass[idx])
        return ce, {"ce": ce.detach()}

    return loss_fn


def student_loss(train: DeviceSplit, teacher_logits: torch.Tensor | None, objective: DistillationLoss) -> LossFn:
    """Student objective: `DistillationLoss` against cached teacher logits of the batch (no teacher forward).

    `teacher_logits` is (N, S) (the clean images' logits) or (N, V, S) (the logits of each image's V views,
    `teacher_logits: views`): then each sample distils the logits of the very view the augmentation gave
    it (view 0, the image itself, when the batch is not augmented)."""

    def loss_fn(out: torch.Tensor, idx: torch.Tensor, view: torch.Tensor | None = None):
        t = None
        if teacher_logits is not None and teacher_logits.dim() == 3:
            t = teacher_logits[idx, view if view is not None else 0]
        elif teacher_logits is not None:
            t = teacher_logits[idx]
        return objective(out, t, train.classes[idx])

    return loss_fn


def fit(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: LossFn,
    train: DeviceSplit,
    val: DeviceSplit,
    membership: torch.Tensor,
    positive_class: int,
    epochs: int,
    batch_size: int,
    seed: int,
    start_epoch: int = 0,
    curriculum: Curriculum | None = None,
    augment: bool = False,
) -> Iterator[dict[str, float]]:
    """Train from `start_epoch` to `epochs`, yielding each epoch's metrics (1-based `epoch`, its time
    `epoch_time_s` and its end `epoch_end` in seconds since the epoch; on CUDA `gpu_max_allocated_mb`,
    the peak of torch's allocations so far, to size `resources.gpu` fractions) after it.

    With a `curriculum`, epoch e trains on the easiest n(e) of the N ordered samples (`curriculum.epoch_size`:
    ceil(g(e) N), whole difficulty levels for `levels`); `train_share` is n(e) / N.
    """
    for epoch in range(start_epoch, epochs):
        t0 = time.perf_counter()
        subset, share = None, 1.0
        if curriculum is not None:
            c = curriculum
            n = epoch_size(c.pacing, epoch, epochs, c.start, c.full_at, c.level_ends)
            subset, share = c.order[:n], n / len(c.order)
        metrics = train_one_epoch(
            model, optimizer, train, loss_fn, batch_size, seed=seed * 1_000_003 + epoch, order=subset, augment=augment
        )
        metrics["train_share"] = share
        metrics.update(evaluate(model, val, membership, positive_class))
        metrics["epoch"] = epoch + 1
        metrics["epoch_time_s"] = time.perf_counter() - t0
        metrics["epoch_end"] = time.time()  # wall clock, sub-second (Ray's own `timestamp` has whole seconds)
        if train.x.device.type == "cuda":  # the peak of this process's tensors so far: what a trial needs
            metrics["gpu_max_allocated_mb"] = torch.cuda.max_memory_allocated(train.x.device) / 2**20
        yield metrics


@dataclass
class Curriculum:
    """A pacing function (curriculum.py) over `order`: training indices (N,), easiest first, and
    `level_ends`: the cumulative counts (c_1, ..., c_L = N) of `order` at the end of each difficulty
    level (`curriculum.level_ends`; `levels` admits whole levels, the other pacings read N only)."""

    pacing: str
    start: float
    full_at: float
    order: torch.Tensor
    level_ends: tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.level_ends or self.level_ends[-1] != len(self.order):
            raise ValueError(f"level_ends must end at the {len(self.order)} ordered samples, got {self.level_ends}")


def to_device(model: nn.Module, device: torch.device, image: bool) -> nn.Module:
    """Move a model to `device`; on CUDA, image models use channels_last and cuDNN autotuning."""
    model = model.to(device)
    if device.type == "cuda" and image:
        torch.backends.cudnn.benchmark = True  # fixed input size: let cuDNN pick the fastest kernels
        model = model.to(memory_format=torch.channels_last)
    return model


def make_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)


def membership_for(subclass_to_class: np.ndarray, device) -> torch.Tensor:
    return class_membership(torch.as_tensor(np.array(subclass_to_class, dtype=np.int64, copy=True))).to(device)


def save_state(
    directory: str | os.PathLike,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    epoch: int,
    best: dict | None = None,
    history: list[dict] | None = None,
) -> None:
    """Write a resumable checkpoint into `directory`: model, optimizer, finished epochs, `best`
    ({"model": state_dict, "epoch": int, "value": float}: the best epoch so far, carried forward so the
    latest checkpoint alone holds everything and older ones can be deleted) and `history` (the metrics
    reported for each epoch so far: plain numbers and strings, replayed by a restored trial)."""
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": int(epoch)}
    if best is not None:
        state["best"] = best
    if history is not None:
        state["history"] = history
    torch.save(state, os.path.join(directory, STATE_FILE))


def best_weights(state: dict) -> dict:
    """The best epoch's model weights of a checkpoint (its current weights if it records no best)."""
    return state["best"]["model"] if "best" in state else state["model"]


def load_tensors(path: str | os.PathLike, *, kind: str, missing: str, fix: str) -> Any:
    """`torch.load(path, weights_only=True)` onto the CPU. A missing file, one holding pickled code, or a
    damaged one is a `CheckpointError` naming `path` and the `kind` of file, with `missing` (why it may be
    missing) or `fix` (what to do)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: {kind} file missing; {missing}") from None
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"{path}: holds pickled objects other than tensors, so it is refused by torch.load(weights_only=True) "
            f"(loading it could run code); {fix}"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:  # torch's errors for a truncated/corrupt zip
        raise CheckpointError(f"{path}: damaged {kind} ({first_line(e)}); {fix}") from None


def load_state(directory: str | os.PathLike) -> dict:
    """A checkpoint written by `save_state`, loaded with `weights_only=True` onto the CPU."""
    path = os.path.join(directory, STATE_FILE)
    state = load_tensors(
        path,
        kind="checkpoint",
        missing="the checkpoint directory is incomplete. Delete that directory and run again",
        fix="Delete that checkpoint directory and run again: the trial goes on from its previous checkpoint",
    )
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{path}: not an skd-tune checkpoint (no model state in it)")
    return state
