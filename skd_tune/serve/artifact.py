"""The exported student: `model.pt` + `meta.json`, written, validated and loaded with no pickled code.

The pipeline's `export` stage writes `EXPERIMENT/export/` with `export_student`: `model.pt` (a
`state_dict`, loadable with `torch.load(..., weights_only=True)`) and `meta.json` (the model name,
width and shapes, class and subclass names, the input scale and normalisation, the trial's parameters and
metrics, and the spec that produced it). `load_student(dir)` rebuilds the model from these two files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from ..atomic import write_atomic, write_json_atomic
from ..errors import CheckpointError, UserError, first_line
from ..losses import class_logits, class_membership
from ..models import build_model
from ..train import load_tensors

if TYPE_CHECKING:  # scikit-learn and pydantic load lazily: `skd-tune predict` starts faster without them
    from ..data import Dataset
    from ..spec import Spec

__all__ = [
    "META_KEYS",
    "StudentWithClassLogits",
    "check_export_dir",
    "evaluate_exported",
    "export_student",
    "is_export_dir",
    "load_student",
    "resolve_export_dir",
    "set_test_metrics",
    "predict",
    "probabilities",
]

# what meta.json must hold for `load_student` and `skd-tune predict`
META_KEYS = (
    "model",
    "input_shape",
    "num_subclasses",
    "class_names",
    "subclass_names",
    "subclass_to_class",
    "input_scale",
    "normalisation",
)
_PREDICT_CHUNK = 512


def export_student(
    out_dir: Path, spec: Spec, data: Dataset, checkpoint_dir: Path, params: dict[str, Any], metrics: dict[str, Any]
) -> Path:
    """Write `model.pt` + `meta.json` for the student saved in `checkpoint_dir` (a trial checkpoint)."""
    from ..data.summary import teacher_logits_note
    from ..train import best_weights, load_state

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    student = spec.student_for(params)
    state = best_weights(load_state(checkpoint_dir))
    meta = {
        "format": 1,
        "model": student.model,
        "width": student.width,  # the multiplier of its channels or hidden units (models.py); absent: 1
        "input_shape": list(data.input_shape),
        # the model's outputs: the known subclasses, or the teacher's invented or clustered ones
        "num_subclasses": data.num_outputs,
        "class_names": data.class_names,
        "subclass_names": data.output_names,
        "subclass_to_class": data.output_to_class.tolist(),
        "subclasses": _scheme(data),
        "positive_class": data.positive_class,
        "input_scale": data.scale,
        "normalisation": {"mean": data.mean, "std": data.std},
        "params": {k: (v.item() if hasattr(v, "item") else v) for k, v in params.items()},
        "metrics": {
            "val": {
                k: float(v) if isinstance(v, (int, float, np.floating, np.integer)) else v for k, v in metrics.items()
            }
        },
        "student": student.model_dump(mode="json"),
        "spec": spec.model_dump(mode="json"),
        "teacher_logits": teacher_logits_note(spec),
    }
    # into a file object: the zip's inner folder is then "archive", not the temporary file's random name
    write_atomic(out_dir / "model.pt", lambda f: torch.save(state, f))
    write_json_atomic(out_dir / "meta.json", meta)
    return out_dir


def is_export_dir(path: str | Path) -> bool:
    """True when `path` holds both files of an export: `meta.json` and `model.pt`."""
    path = Path(path)
    return (path / "meta.json").is_file() and (path / "model.pt").is_file()


def check_export_dir(path: str | Path) -> Path:
    """`path` when it is an export directory (`model.pt` + `meta.json`: the pipeline's `EXPERIMENT/export`
    or one written by `skd-tune export`); otherwise raises `UserError` (`CheckpointError` for an export
    with `meta.json` but no `model.pt`) saying what is missing and how to get it.

    An experiment directory is not an export directory: resolving one to its `export/` is the caller's.
    """
    src = Path(path)
    if not src.exists():
        raise UserError(
            f"{src}: no such directory; give an experiment directory (e.g. runs/digits-skd) or an export "
            "directory holding model.pt and meta.json"
        )
    if not src.is_dir():
        raise UserError(
            f"{src}: is a file, not a directory; give an experiment directory (e.g. runs/digits-skd) or "
            "an export directory holding model.pt and meta.json"
        )
    if is_export_dir(src):
        return src
    if (src / "meta.json").is_file():
        raise CheckpointError(
            f"{src / 'model.pt'}: file missing; this export directory has meta.json but no "
            "state_dict. Export again with state_dict among --formats"
        )
    raise UserError(
        f"{src}: neither an skd-tune experiment (no spec.yaml, no export/) nor an export directory (no "
        "model.pt and meta.json); give e.g. runs/digits-skd or runs/digits-skd/export"
    )


def resolve_export_dir(source: str | Path) -> Path:
    """The export directory `source` names: an export directory itself, or an experiment (a directory or a
    URI) whose export stage has run; otherwise `UserError` saying what is missing and how to get it."""
    from ..experiment import Experiment, is_uri
    from ..experiment.layout import EXPORT, SPEC

    if not is_uri(source):
        for candidate in (Path(source), Path(source) / EXPORT):  # an export, or an experiment's (also a copy of it)
            if is_export_dir(candidate):
                return candidate
    if is_uri(source) or (Path(source) / SPEC).is_file():
        exp = Experiment.existing(source)
        if is_export_dir(exp.export_dir):
            return exp.export_dir
        raise UserError(
            f"{exp.export_dir}: no exported student (model.pt and meta.json), so the experiment's export stage has "
            f"not run; run `skd-tune run {source}` to finish the experiment, then export again"
        )
    return check_export_dir(source)


def set_test_metrics(export_dir: str | Path, metrics: dict[str, float]) -> None:
    """Record the exported student's test metrics (measured after loading it back) in its meta.json."""
    meta = _read_meta(Path(export_dir))
    meta["metrics"]["test"] = metrics
    write_json_atomic(Path(export_dir) / "meta.json", meta)


def _read_meta(export_dir: Path) -> dict[str, Any]:
    path = export_dir / "meta.json"
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(
            f"{path}: file missing, so {export_dir} is not a complete export; export again with "
            "`skd-tune export EXPERIMENT --out DIR` (or re-run the experiment's export stage)"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(
            f"{path}: cannot be read as JSON ({e}); the file is damaged. Export again with "
            "`skd-tune export EXPERIMENT --out DIR`"
        ) from None
    missing = [k for k in META_KEYS if not isinstance(meta, dict) or k not in meta]
    if missing:
        raise CheckpointError(
            f"{path}: not an skd-tune export description (missing {', '.join(missing)}); export again "
            "with `skd-tune export EXPERIMENT --out DIR`"
        )
    return meta


def load_student(export_dir: str | Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The exported student (in eval mode, on the CPU) and its metadata.

    The weights are read with `torch.load(..., weights_only=True)`: no pickled code runs. A missing or
    damaged `meta.json`/`model.pt` raises `CheckpointError` naming the file.
    """
    export_dir = Path(export_dir)
    meta = _read_meta(export_dir)
    path = export_dir / "model.pt"
    try:
        model = build_model(
            meta["model"],
            meta["num_subclasses"],
            tuple(meta["input_shape"]),
            meta["normalisation"]["mean"],
            meta["normalisation"]["std"],
            width=float(meta.get("width", 1.0)),
        )
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(
            f"{export_dir / 'meta.json'}: describes a model this version cannot build ({e}); "
            "export it again with this version of skd-tune"
        ) from None
    state = load_tensors(
        path,
        kind="state_dict",
        missing=f"the state_dict was not exported into {export_dir}; export again with state_dict among "
        "--formats, e.g. `skd-tune export EXPERIMENT --out DIR`",
        fix="export again with `skd-tune export EXPERIMENT --out DIR`, which writes only tensors",
    )
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as e:
        raise CheckpointError(
            f"{path}: the weights do not fit the model {meta['model']!r} that meta.json describes "
            f"({first_line(e)}); the two files come from different exports. Export again"
        ) from None
    return model.eval(), meta


def probabilities(model: nn.Module, meta: dict[str, Any], x01: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Class and subclass probabilities, (N, C) and (N, S), for inputs already on the [0, 1] scale
    (raw values times `input_scale`), computed in chunks."""
    membership = class_membership(torch.tensor(meta["subclass_to_class"]))
    cls_out, sub_out = [], []
    with torch.no_grad():
        for start in range(0, max(len(x01), 1), _PREDICT_CHUNK):
            sub = model(x01[start : start + _PREDICT_CHUNK])
            cls_out.append(torch.softmax(class_logits(sub, membership), 1))
            sub_out.append(torch.softmax(sub, 1))
    return torch.cat(cls_out).numpy(), torch.cat(sub_out).numpy()


@torch.no_grad()
def predict(model: torch.nn.Module, meta: dict[str, Any], x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Class and subclass probabilities, (N, C) and (N, S), for raw inputs `x` (as the dataset stores them)."""
    xt = torch.as_tensor(np.asarray(x), dtype=torch.float32) * meta["input_scale"]
    return probabilities(model, meta, xt)


def evaluate_exported(
    model: torch.nn.Module, meta: dict[str, Any], x: np.ndarray, y_class: np.ndarray
) -> dict[str, float]:
    """Class metrics of an exported student on raw inputs `x` with true class indices `y_class`."""
    from ..metrics import classification_metrics

    probs, _ = predict(model, meta, x)
    return classification_metrics(y_class, probs, meta["positive_class"])


class StudentWithClassLogits(nn.Module):
    """The student plus its class head: [0, 1] inputs -> (subclass logits (N, S), class logits (N, C)).

    Class logits are logsumexp over each class's subclasses (`skd_tune.losses.class_logits`). This is
    the module the TorchScript and ONNX artefacts are traced from.
    """

    def __init__(self, student: nn.Module, subclass_to_class: list[int]):
        super().__init__()
        self.student = student
        self.register_buffer("membership", class_membership(torch.tensor(subclass_to_class, dtype=torch.long)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sub = self.student(x)
        return sub, class_logits(sub, self.membership)


def _scheme(data) -> str:
    """Where the model's outputs come from: known subclasses (split into several outputs each), or
    outputs the teacher invented (auxiliary loss) or that clustering its embeddings found."""
    if data.clustered:
        return "clustered"
    if data.invented:
        return "invented"
    return "known" if data.outputs_per_group == 1 else "known, split"
