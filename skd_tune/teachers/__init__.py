"""Bring your own teacher: a teacher made elsewhere, loaded and checked, and subclasses found in its
embeddings.

- `load_teacher(spec, data)`: the logits (and embeddings) of `teacher.source: checkpoint | logits` for every
  split (loaded.py: formats and checks; checkpoint.py: TorchScript or a registry model's state_dict;
  order.py: the sample order that precomputed logits must follow, and `export_order`);
- clusters.py: `data.subclasses: clustered`, per-class k-means of the embeddings and subclass logits that
  keep the teacher's class probabilities exactly;
- `train_teacher`: the spec's teacher trained in this process (`skd-tune teacher`, to make a teacher
  "elsewhere" for the two-command recipe), saved by `checkpoint.save_teacher`.

Plain torch, numpy and scikit-learn: nothing here imports Ray.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .clusters import Clusters, fit_clusters, subclass_logits
from .loaded import TeacherOutputs, expected_width, load_precomputed
from .order import ORDER_FILE, check_order, export_order, order_hashes

if TYPE_CHECKING:
    import torch
    from torch import nn

    from ..data import Dataset
    from ..spec import Spec

__all__ = [
    "ORDER_FILE",
    "Clusters",
    "TeacherOutputs",
    "check_order",
    "expected_width",
    "export_order",
    "fit_clusters",
    "load_precomputed",
    "load_teacher",
    "order_hashes",
    "subclass_logits",
    "train_teacher",
]


def load_teacher(spec: Spec, data: Dataset, device: torch.device | None = None) -> TeacherOutputs:
    """The loaded teacher's outputs of every split (`teacher.source` checkpoint or logits), checked."""
    if spec.teacher.source == "logits":
        return load_precomputed(spec, data)
    from .checkpoint import load_checkpoint_outputs

    return load_checkpoint_outputs(spec, data, device)


def train_teacher(spec: Spec, data: Dataset, say=print) -> nn.Module:
    """The spec's teacher (`teacher.model`, ...; one output per class with data.subclasses: clustered)
    trained here as `teacher.source: train` trains it, without Ray; returns its best epoch's model."""
    from ..data import class_view
    from ..recipes import build_teacher_run

    run = build_teacher_run(spec, class_view(data), {})
    for metrics, _ in run.epochs():
        say(f"epoch {int(metrics['epoch'])}: {spec.search.metric} {metrics.get(spec.search.metric, float('nan')):.4f}")
    if run.best is not None:
        run.model.load_state_dict(run.best["model"])
    return run.model
