"""Export of the best student and loading it back, with no Ray and no pickled code.

`export/` holds `model.pt` (a `state_dict`, loadable with `torch.load(..., weights_only=True)`) and
`meta.json` (the model name and shapes, class and subclass names, the input scale and normalisation,
the trial's parameters and metrics, and the spec that produced it). `load_student(dir)` rebuilds the
model from these two files.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .data import Dataset
from .losses import class_logits, class_membership
from .metrics import classification_metrics
from .models import build_model
from .spec import Spec
from .train import best_weights, load_state

__all__ = ["evaluate_exported", "export_student", "load_student", "predict"]



def export_student(out_dir: Path, spec: Spec, data: Dataset, checkpoint_dir: Path, params: dict[str, Any], metrics: dict[str, Any]) -> Path:
    """Write `model.pt` + `meta.json` for the student saved in `checkpoint_dir` (a trial checkpoint)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    student = spec.student_for(params)
    state = best_weights(load_state(checkpoint_dir))
    meta = {
        "format": 1,
        "model": student.model,
        "input_shape": list(data.input_shape),
        "num_subclasses": data.num_subclasses,
        "class_names": data.class_names,
        "subclass_names": data.subclass_names,
        "subclass_to_class": data.subclass_to_class.tolist(),
        "positive_class": data.positive_class,
        "input_scale": data.scale,
        "normalisation": {"mean": data.mean, "std": data.std},
        "params": {k: (v.item() if hasattr(v, "item") else v) for k, v in params.items()},
        "metrics": {"val": {k: float(v) if isinstance(v, (int, float, np.floating, np.integer)) else v for k, v in metrics.items()}},
        "student": student.model_dump(mode="json"),
        "spec": spec.model_dump(mode="json"),
        "teacher_logits": "clean inputs (cached once, no augmentation)",
    }
    tmp = out_dir / ".model.pt.tmp"
    torch.save(state, tmp)
    os.replace(tmp, out_dir / "model.pt")
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=2))
    return out_dir


def load_student(export_dir: str | Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The exported student (in eval mode, on the CPU) and its metadata."""
    export_dir = Path(export_dir)
    meta = json.loads((export_dir / "meta.json").read_text())
    model = build_model(meta["model"], meta["num_subclasses"], tuple(meta["input_shape"]),
                        meta["normalisation"]["mean"], meta["normalisation"]["std"])
    model.load_state_dict(torch.load(export_dir / "model.pt", map_location="cpu", weights_only=True))
    return model.eval(), meta


@torch.no_grad()
def predict(model: torch.nn.Module, meta: dict[str, Any], x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Class and subclass probabilities, (N, C) and (N, S), for raw inputs `x` (as the dataset stores them)."""
    xt = torch.as_tensor(np.asarray(x), dtype=torch.float32) * meta["input_scale"]
    sub = model(xt)
    membership = class_membership(torch.tensor(meta["subclass_to_class"]))
    return torch.softmax(class_logits(sub, membership), 1).numpy(), torch.softmax(sub, 1).numpy()


def evaluate_exported(model: torch.nn.Module, meta: dict[str, Any], x: np.ndarray, y_class: np.ndarray) -> dict[str, float]:
    """Class metrics of an exported student on raw inputs `x` with true class indices `y_class`."""
    probs, _ = predict(model, meta, x)
    return classification_metrics(y_class, probs, meta["positive_class"])
