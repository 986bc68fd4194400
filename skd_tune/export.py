"""Export of the best student, checked artefacts for deployment, and predictions, with no Ray and no
pickled code.

The pipeline's `export` stage writes `EXPERIMENT/export/` with `export_student`: `model.pt` (a
`state_dict`, loadable with `torch.load(..., weights_only=True)`) and `meta.json` (the model name and
shapes, class and subclass names, the input scale and normalisation, the trial's parameters and
metrics, and the spec that produced it). `load_student(dir)` rebuilds the model from these two files.

`skd-tune export EXPERIMENT --out DIR` (`export_artifacts`) turns that into deployment artefacts, one
per format in `FORMATS`:

- `state_dict`: `model.pt`, re-saved, to be loaded with `load_student` (or `torch.load(...,
  weights_only=True)` into `build_model(...)`); it outputs subclass logits only.
- `torchscript`: `model.torchscript.pt`, a traced `StudentWithClassLogits` (`torch.jit.load`).
- `onnx`: `model.onnx` (one file, weights inside), made by the `torch.export`-based exporter
  (`torch.onnx.export(dynamo=True)`, which uses onnxscript), or by the legacy TorchScript-based one only
  if that fails; checked with onnxruntime. It needs the optional extra `pip install 'skd-tune[onnx]'`
  and is skipped, not failed, without onnx/onnxruntime.

Interface of the TorchScript and ONNX artefacts (also written into `meta.json` under "artefacts"):
one input `input`, float32 of shape (N, *input_shape) on the [0, 1] scale, i.e. the raw dataset
values times `input_scale` (an 8-bit image divided by 255); the model normalises it itself. Two
outputs: `subclass_logits` (N, S) and `class_logits` (N, C), where a class logit is the logsumexp of
its subclasses' logits, so softmax(class_logits) sums the subclass probabilities of each class.

Each artefact is reloaded and run on a fixed batch of `CHECK_BATCH` uniform [0, 1] inputs (a batch
size other than the `TRACE_BATCH` used to trace it, which proves the batch axis is dynamic); the
largest absolute difference of its logits from the PyTorch model's must stay within
`TOLERANCES[format]`.

`skd-tune predict DIR INPUT...` (`predict_inputs`) loads the state_dict model and gives, per input
sample, the class, its probability and the subclass probabilities: image files (PNG, JPEG, ...) for
image models, `.npy` arrays or `.csv` rows of raw dataset values for any model.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import pickle
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from .errors import CheckpointError, DataError, UserError
from .losses import class_logits, class_membership
from .models import build_model

if TYPE_CHECKING:  # scikit-learn and pydantic load lazily: `skd-tune predict` starts faster without them
    from .data import Dataset
    from .spec import Spec

__all__ = [
    "CHECK_BATCH",
    "FORMATS",
    "IMAGE_EXTENSIONS",
    "ONNX_INSTALL",
    "TOLERANCES",
    "TRACE_BATCH",
    "ArtifactCheck",
    "Prediction",
    "StudentWithClassLogits",
    "evaluate_exported",
    "export_artifacts",
    "export_student",
    "format_export",
    "format_predictions",
    "load_student",
    "predict",
    "predict_inputs",
    "resolve_export_dir",
]

# format -> file name in the output directory
FORMATS: dict[str, str] = {
    "state_dict": "model.pt",
    "torchscript": "model.torchscript.pt",
    "onnx": "model.onnx",
}
# format -> largest absolute logit difference from the PyTorch model that passes the check
TOLERANCES: dict[str, float] = {"state_dict": 1e-4, "torchscript": 1e-4, "onnx": 1e-3}
TRACE_BATCH = 4  # batch size of the example input the TorchScript/ONNX graphs are traced with
CHECK_BATCH = 16  # batch size of the check: differs from TRACE_BATCH to prove the dynamic batch axis
CHECK_SEED = 0
ONNX_INSTALL = "pip install 'skd-tune[onnx]'"
INPUT_NAME = "input"
OUTPUT_NAMES = ("subclass_logits", "class_logits")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
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
_TOP_SUBCLASSES = 5


# --------------------------------------------------------------------------------------------------
# The pipeline's export stage: model.pt + meta.json


def export_student(
    out_dir: Path, spec: Spec, data: Dataset, checkpoint_dir: Path, params: dict[str, Any], metrics: dict[str, Any]
) -> Path:
    """Write `model.pt` + `meta.json` for the student saved in `checkpoint_dir` (a trial checkpoint)."""
    from .train import best_weights, load_state

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    student = spec.student_for(params)
    state = best_weights(load_state(checkpoint_dir))
    meta = {
        "format": 1,
        "model": student.model,
        "input_shape": list(data.input_shape),
        # the model's outputs: the known subclasses, or the teacher's invented ones (data.output_names)
        "num_subclasses": data.num_outputs,
        "class_names": data.class_names,
        "subclass_names": data.output_names,
        "subclass_to_class": data.output_to_class.tolist(),
        "subclasses": "invented" if data.invented else ("known" if data.outputs_per_group == 1 else "known, split"),
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
        "teacher_logits": "clean inputs (cached once, no augmentation)",
    }
    tmp = out_dir / ".model.pt.tmp"
    torch.save(state, tmp)
    os.replace(tmp, out_dir / "model.pt")
    tmp = out_dir / ".meta.json.tmp"
    tmp.write_text(json.dumps(meta, indent=2))
    os.replace(tmp, out_dir / "meta.json")
    return out_dir


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
        )
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(
            f"{export_dir / 'meta.json'}: describes a model this version cannot build ({e}); "
            "export it again with this version of skd-tune"
        ) from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(
            f"{path}: file missing (the state_dict was not exported into {export_dir}); export "
            "again with state_dict among --formats, e.g. `skd-tune export EXPERIMENT --out DIR`"
        ) from None
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"{path}: holds pickled objects other than tensors, so it is refused by "
            "torch.load(weights_only=True) (loading it could run code); export again with "
            "`skd-tune export EXPERIMENT --out DIR`, which writes only tensors"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:  # torch's errors for a truncated/corrupt zip
        raise CheckpointError(
            f"{path}: damaged, cannot be loaded as a state_dict "
            f"({str(e).splitlines()[0] if str(e) else type(e).__name__}); export again with "
            "`skd-tune export EXPERIMENT --out DIR`"
        ) from None
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(
            f"{path}: the weights do not fit the model {meta['model']!r} that meta.json describes "
            f"({first}); the two files come from different exports. Export again"
        ) from None
    return model.eval(), meta


def _probabilities(model: nn.Module, meta: dict[str, Any], x01: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Class and subclass probabilities for inputs already on the [0, 1] scale, in chunks."""
    membership = class_membership(torch.tensor(meta["subclass_to_class"]))
    cls_out, sub_out = [], []
    for start in range(0, max(len(x01), 1), _PREDICT_CHUNK):
        sub = model(x01[start : start + _PREDICT_CHUNK])
        cls_out.append(torch.softmax(class_logits(sub, membership), 1))
        sub_out.append(torch.softmax(sub, 1))
    return torch.cat(cls_out).numpy(), torch.cat(sub_out).numpy()


@torch.no_grad()
def predict(model: torch.nn.Module, meta: dict[str, Any], x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Class and subclass probabilities, (N, C) and (N, S), for raw inputs `x` (as the dataset stores them)."""
    xt = torch.as_tensor(np.asarray(x), dtype=torch.float32) * meta["input_scale"]
    return _probabilities(model, meta, xt)


def evaluate_exported(
    model: torch.nn.Module, meta: dict[str, Any], x: np.ndarray, y_class: np.ndarray
) -> dict[str, float]:
    """Class metrics of an exported student on raw inputs `x` with true class indices `y_class`."""
    from .metrics import classification_metrics

    probs, _ = predict(model, meta, x)
    return classification_metrics(y_class, probs, meta["positive_class"])


# --------------------------------------------------------------------------------------------------
# Deployment artefacts: state_dict, TorchScript, ONNX, each reloaded and checked


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


@dataclass
class ArtifactCheck:
    """One artefact: where it was written and how far its reloaded logits are from the PyTorch model's.

    `skipped` holds the reason when the format could not be produced (then `path` and `max_abs_diff`
    are None); `detail` says how it was made (e.g. the ONNX exporter and opset).
    """

    format: str
    path: Path | None
    max_abs_diff: float | None
    tolerance: float
    batch: int = CHECK_BATCH
    skipped: str | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        """True when the artefact was written and passed its check."""
        return self.skipped is None and self.max_abs_diff is not None and self.max_abs_diff <= self.tolerance


@dataclass
class Prediction:
    """The prediction for one input sample (`name`: the file, with `[i]` for a row of an array/CSV)."""

    name: str
    class_name: str
    probability: float
    class_probabilities: dict[str, float] = field(default_factory=dict)
    subclass_probabilities: dict[str, float] = field(default_factory=dict)

    def top_subclasses(self, k: int = _TOP_SUBCLASSES) -> list[tuple[str, float]]:
        """The `k` most probable subclasses, most probable first."""
        return sorted(self.subclass_probabilities.items(), key=lambda kv: -kv[1])[:k]


def _is_export_dir(path: Path) -> bool:
    return (path / "meta.json").is_file() and (path / "model.pt").is_file()


def resolve_export_dir(source: str | Path) -> Path:
    """The directory holding `model.pt` + `meta.json` for `source`: an export directory itself (the
    pipeline's `EXPERIMENT/export` or one written by `skd-tune export`), or an experiment directory
    whose `export/` is used. Raises `UserError` saying what is missing and how to get it."""
    src = Path(source)
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
    if _is_export_dir(src):
        return src
    if _is_export_dir(src / "export"):
        return src / "export"
    if (src / "spec.yaml").is_file() or (src / "state.json").is_file() or (src / "export").is_dir():
        raise UserError(
            f"{src / 'export'}: no exported student (model.pt and meta.json), so the experiment's export "
            f"stage has not run; run `skd-tune run {src}` to finish the experiment, then export again"
        )
    if (src / "meta.json").is_file():
        raise CheckpointError(
            f"{src / 'model.pt'}: file missing; this export directory has meta.json but no "
            "state_dict. Export again with state_dict among --formats"
        )
    raise UserError(
        f"{src}: neither an skd-tune experiment (no spec.yaml, no export/) nor an export directory (no "
        "model.pt and meta.json); give e.g. runs/digits-skd or runs/digits-skd/export"
    )


def _check_formats(formats: list[str]) -> list[str]:
    wanted = list(dict.fromkeys(f.strip() for f in formats if f and f.strip()))
    unknown = [f for f in wanted if f not in FORMATS]
    if unknown:
        raise UserError(
            f"unknown export format {', '.join(repr(f) for f in unknown)}; valid formats: "
            f"{', '.join(FORMATS)} (give them comma-separated, e.g. --formats state_dict,onnx)"
        )
    if not wanted:
        raise UserError(f"no export format given; valid formats: {', '.join(FORMATS)} (e.g. --formats state_dict,onnx)")
    return wanted


def _check_batch(input_shape: list[int], n: int, seed: int = CHECK_SEED) -> torch.Tensor:
    """A deterministic batch of `n` inputs, uniform in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand((n, *input_shape), generator=g, dtype=torch.float32)


def _max_abs_diff(outputs: tuple, reference: tuple[torch.Tensor, torch.Tensor]) -> float:
    diffs = []
    for out, ref in zip(outputs, reference, strict=True):
        out = torch.as_tensor(np.asarray(out)) if not isinstance(out, torch.Tensor) else out
        if tuple(out.shape) != tuple(ref.shape):
            return float("inf")
        diffs.append(float((out.float() - ref).abs().max()))
    return max(diffs)


def _interface(meta: dict[str, Any]) -> dict[str, Any]:
    shape = ["N", *meta["input_shape"]]
    return {
        "input": {
            "name": INPUT_NAME,
            "dtype": "float32",
            "shape": shape,
            "scale": "[0, 1]: the raw dataset values times input_scale (an 8-bit image divided by 255); "
            "the model normalises them itself (its first layer), so give no other preprocessing",
            "input_scale": meta["input_scale"],
        },
        "outputs": [
            {
                "name": OUTPUT_NAMES[0],
                "dtype": "float32",
                "shape": ["N", meta["num_subclasses"]],
                "labels": meta["subclass_names"],
            },
            {
                "name": OUTPUT_NAMES[1],
                "dtype": "float32",
                "shape": ["N", len(meta["class_names"])],
                "labels": meta["class_names"],
                "definition": "logsumexp of the subclass logits of each class (subclass_to_class), so that "
                "softmax(class_logits) = the sum of each class's subclass probabilities",
            },
        ],
        "probabilities": "softmax over the last axis of each output",
        "batch_axis": f"dynamic (traced with N={TRACE_BATCH}, checked with N={CHECK_BATCH})",
        "files": {},
    }


_FILE_USE = {
    "state_dict": "skd_tune.export.load_student(DIR) (torch.load(weights_only=True) + build_model); "
    "the bare student: outputs subclass logits only",
    "torchscript": "torch.jit.load(path); module(x) -> (subclass_logits, class_logits)",
    "onnx": "onnxruntime.InferenceSession(path).run(None, {'input': x}) -> [subclass_logits, class_logits]",
}


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)


def _import_onnx():
    """The onnx and onnxruntime modules; `ImportError` when the [onnx] extra is not installed."""
    import onnx  # noqa: F401  (needed by the exporters)
    import onnxruntime

    return onnx, onnxruntime


@contextlib.contextmanager
def _quiet_jit():
    """Silence torch's 'torch.jit.* is deprecated' notices while tracing (nothing a user can act on)."""
    with warnings.catch_warnings():
        for category in (FutureWarning, DeprecationWarning):
            warnings.filterwarnings("ignore", message=r".*torch\.jit.*deprecated", category=category)
        yield


def _export_state_dict(model: nn.Module, out: Path) -> tuple[Path, str]:
    path = out / FORMATS["state_dict"]
    tmp = out / f".{path.name}.tmp"
    torch.save(model.state_dict(), tmp)
    os.replace(tmp, path)
    return path, "loaded with torch.load(weights_only=True) + load_student"


def _check_state_dict(out: Path, x: torch.Tensor, ref) -> float:
    reloaded, meta = load_student(out)  # torch.load(..., weights_only=True) inside
    wrapper = StudentWithClassLogits(reloaded, meta["subclass_to_class"]).eval()
    with torch.no_grad():
        return _max_abs_diff(wrapper(x), ref)


def _export_torchscript(wrapper: nn.Module, example: torch.Tensor, out: Path) -> tuple[Path, str]:
    path = out / FORMATS["torchscript"]
    with _quiet_jit(), torch.no_grad():
        traced = torch.jit.trace(wrapper, example)
        tmp = out / f".{path.name}.tmp"
        torch.jit.save(traced, str(tmp))
    os.replace(tmp, path)
    return path, f"torch.jit.trace with N={len(example)}"


def _check_torchscript(path: Path, x: torch.Tensor, ref) -> float:
    with _quiet_jit(), torch.no_grad():
        module = torch.jit.load(str(path), map_location="cpu").eval()
        return _max_abs_diff(module(x), ref)


def _onnx_dynamo(wrapper: nn.Module, example: torch.Tensor, path: Path) -> None:
    """The `torch.export`-based exporter (uses onnxscript), with a dynamic batch axis."""
    torch.onnx.export(
        wrapper,
        (example,),
        str(path),
        dynamo=True,
        verbose=False,
        external_data=False,
        input_names=[INPUT_NAME],
        output_names=list(OUTPUT_NAMES),
        dynamic_shapes={"x": {0: torch.export.Dim("batch")}},
    )


def _onnx_legacy(wrapper: nn.Module, example: torch.Tensor, path: Path) -> None:
    """The TorchScript-based exporter torch still ships, with a dynamic batch axis."""
    with warnings.catch_warnings():
        # Its deprecation notice: we use it only when the torch.export-based exporter failed (reported).
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        torch.onnx.export(
            wrapper,
            (example,),
            str(path),
            dynamo=False,
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_axes={name: {0: "batch"} for name in (INPUT_NAME, *OUTPUT_NAMES)},
        )


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else type(e).__name__


def _export_onnx(wrapper: nn.Module, example: torch.Tensor, out: Path, onnx) -> tuple[Path, str]:
    path = out / FORMATS["onnx"]
    tmp = out / f".tmp.{path.name}"
    try:
        _onnx_dynamo(wrapper, example, tmp)
        how = "torch.onnx.export(dynamo=True)"
    except (ImportError, torch.onnx.errors.OnnxExporterError) as e:  # onnxscript missing, or an unsupported op
        dynamo_error = _first_line(e)
        try:
            _onnx_legacy(wrapper, example, tmp)
        except (ImportError, RuntimeError, ValueError, TypeError) as legacy:  # OnnxExporterError is a RuntimeError
            tmp.unlink(missing_ok=True)
            raise CheckpointError(
                f"{path}: the model cannot be exported to ONNX by torch {torch.__version__} (torch.export-based "
                f"exporter: {dynamo_error}; legacy exporter: {_first_line(legacy)}). Export the other formats with "
                "--formats state_dict,torchscript"
            ) from None
        how = f"legacy torch.onnx.export(dynamo=False), as dynamo=True failed: {dynamo_error}"
    os.replace(tmp, path)
    opsets = {
        imp.domain or "ai.onnx": imp.version for imp in onnx.load(str(path), load_external_data=False).opset_import
    }
    return path, f"{how}, opset {opsets.get('ai.onnx', '?')}"


def _ort_errors(ort) -> tuple[type[BaseException], ...]:
    """onnxruntime's exception classes (they derive from Exception directly, not from RuntimeError)."""
    state = getattr(getattr(ort, "capi", None), "onnxruntime_pybind11_state", None)
    names = (
        "Fail",
        "InvalidArgument",
        "NoSuchFile",
        "NoModel",
        "EngineError",
        "RuntimeException",
        "InvalidProtobuf",
        "ModelLoaded",
        "NotImplemented",
        "InvalidGraph",
        "EPFail",
    )
    found = tuple(
        c for c in (getattr(state, n, None) for n in names) if isinstance(c, type) and issubclass(c, BaseException)
    )
    return found + (RuntimeError, ValueError)


def _check_onnx(path: Path, x: torch.Tensor, ref, ort) -> float:
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        outputs = session.run(list(OUTPUT_NAMES), {INPUT_NAME: x.numpy()})
    except _ort_errors(ort) as e:
        path.unlink(missing_ok=True)
        raise CheckpointError(
            f"{path}: onnxruntime {getattr(ort, '__version__', '')} cannot run the exported model ({_first_line(e)}), "
            "so it was removed. Export the other formats with --formats state_dict,torchscript, or try another "
            f"onnxruntime version ({ONNX_INSTALL})"
        ) from None
    return _max_abs_diff(tuple(outputs), ref)


def export_artifacts(source: str | Path, out_dir: str | Path, formats: list[str]) -> list[ArtifactCheck]:
    """Write the best student of `source` into `out_dir` in each of `formats` (keys of `FORMATS`), reload
    each artefact and compare its logits with the PyTorch model's on a fixed batch; one check per format.

    `source`: an experiment directory (its `export/` is used), or an export directory. `meta.json` is
    always written to `out_dir`, with the artefacts' interface under "artefacts". ONNX is skipped (the
    check says why) when onnx/onnxruntime are not installed. Raises `UserError` for an unknown format or
    a source with nothing exported, `CheckpointError` when an artefact differs from the model by more
    than `TOLERANCES[format]` (the artefact is removed).
    """
    wanted = _check_formats(list(formats))
    src = resolve_export_dir(source)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: is a file; give --out a directory to write the artefacts into")
    model, meta = load_student(src)
    out.mkdir(parents=True, exist_ok=True)
    same_dir = out.resolve() == src.resolve()

    wrapper = StudentWithClassLogits(model, meta["subclass_to_class"]).eval()
    example = _check_batch(meta["input_shape"], TRACE_BATCH, seed=CHECK_SEED + 1)
    x = _check_batch(meta["input_shape"], CHECK_BATCH)
    with torch.no_grad():
        ref = tuple(t.detach().clone() for t in wrapper(x))

    out_meta = {k: v for k, v in meta.items() if k != "artefacts"}
    out_meta["exported_from"] = str(src)
    out_meta["artefacts"] = _interface(meta)
    # Stale artefacts of formats not produced now would not match this meta.json: remove them first.
    for fmt, name in FORMATS.items():
        if fmt not in wanted and not same_dir:
            (out / name).unlink(missing_ok=True)
    _write_json(out / "meta.json", out_meta)

    checks: list[ArtifactCheck] = []
    for fmt in wanted:
        tol = TOLERANCES[fmt]
        if fmt == "state_dict":
            path, detail = _export_state_dict(model, out)
            diff = _check_state_dict(out, x, ref)
        elif fmt == "torchscript":
            path, detail = _export_torchscript(wrapper, example, out)
            diff = _check_torchscript(path, x, ref)
        else:  # onnx
            try:
                onnx, ort = _import_onnx()
            except ImportError as e:
                if not same_dir:
                    (out / FORMATS["onnx"]).unlink(missing_ok=True)  # stale: would not match this meta.json
                reason = f"{getattr(e, 'name', None) or 'onnx/onnxruntime'} is not installed; {ONNX_INSTALL}"
                checks.append(ArtifactCheck(fmt, None, None, tol, skipped=reason))
                continue
            path, detail = _export_onnx(wrapper, example, out, onnx)
            diff = _check_onnx(path, x, ref, ort)
        if not diff <= tol:
            path.unlink(missing_ok=True)
            raise CheckpointError(
                f"{path}: the reloaded {fmt} artefact differs from the PyTorch model by {diff:.3g} in its logits on a "
                f"batch of {CHECK_BATCH} inputs (tolerance {tol:g}), so it was removed. Export without it "
                f"(--formats {','.join(f for f in FORMATS if f != fmt)}) and report the model {meta['model']!r} "
                f"and the versions of torch{' and onnxruntime' if fmt == 'onnx' else ''} as a bug"
            )
        checks.append(ArtifactCheck(fmt, path, diff, tol, detail=detail))

    out_meta["artefacts"]["files"] = {
        c.format: (
            {"skipped": c.skipped}
            if c.skipped
            else {
                "path": c.path.name,
                "use": _FILE_USE[c.format],
                "made_with": c.detail,
                "max_abs_diff": c.max_abs_diff,
                "tolerance": c.tolerance,
                "check_batch": c.batch,
            }
        )
        for c in checks
    }
    _write_json(out / "meta.json", out_meta)
    return checks


def format_export(checks: list[ArtifactCheck]) -> str:
    """A small table: format, path, max abs difference from the PyTorch model (or why it was skipped)."""
    rows = [("format", "path", f"max abs diff (batch of {CHECK_BATCH})")]
    for c in checks:
        if c.skipped:
            rows.append((c.format, "-", f"skipped: {c.skipped}"))
        else:
            rows.append((c.format, str(c.path), f"{c.max_abs_diff:.2e} (tolerance {c.tolerance:g})"))
    widths = [max(len(r[i]) for r in rows) for i in range(2)]
    lines = [f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]}".rstrip() for r in rows]
    written = [c for c in checks if c.path is not None]
    if written:
        lines.append(f'interface, class and subclass names: {written[0].path.parent / "meta.json"} ("artefacts")')
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Predictions for files


def _shape_str(shape) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def _read_image(path: Path, input_shape: tuple[int, ...]) -> np.ndarray:
    """(1, C, H, W) float32 in [0, 1]: the image converted to L/RGB, resized (bilinear), divided by 255."""
    from PIL import Image, UnidentifiedImageError

    if len(input_shape) != 3:
        raise DataError(
            f"{path}: an image, but this model takes tabular inputs of shape {_shape_str(input_shape)}; "
            "give a .npy or .csv file of rows instead"
        )
    c, h, w = input_shape
    if c not in (1, 3):
        raise DataError(
            f"{path}: this model takes {c}-channel inputs of shape {_shape_str(input_shape)}, which an "
            f"image file cannot hold; give a .npy array of shape (N, {c}, {h}, {w}) instead"
        )
    try:
        with Image.open(path) as im:
            im = im.convert("L" if c == 1 else "RGB")
            if im.size != (w, h):
                im = im.resize((w, h), Image.Resampling.BILINEAR)
            arr = np.asarray(im, dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DataError(
            f"{path}: cannot be read as an image ({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
            f"give a PNG or JPEG file (this model takes {c}-channel {h}x{w} images)"
        ) from None
    arr = arr[None] if c == 1 else arr.transpose(2, 0, 1)
    return arr[None]


def _read_npy(path: Path, input_shape: tuple[int, ...]) -> tuple[np.ndarray, bool]:
    """Raw values of shape (N, *input_shape), and whether the file held a batch (else one sample)."""
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise DataError(
            f"{path}: cannot be read as a .npy array ({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
            f"write it with numpy.save, shape (N, {', '.join(map(str, input_shape))})"
        ) from None
    if not isinstance(arr, np.ndarray) or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise DataError(
            f"{path}: holds {getattr(arr, 'dtype', type(arr).__name__)} values, not numbers; "
            f"give a numeric array of shape (N, {', '.join(map(str, input_shape))})"
        )
    if tuple(arr.shape) == tuple(input_shape):
        return arr[None], False
    if arr.ndim == len(input_shape) + 1 and tuple(arr.shape[1:]) == tuple(input_shape):
        return arr, True
    raise DataError(
        f"{path}: array of shape {_shape_str(arr.shape)}, but this model takes shape "
        f"(N, {', '.join(map(str, input_shape))}) or {_shape_str(input_shape)}; reshape it to match"
    )


def _read_csv(path: Path, input_shape: tuple[int, ...]) -> np.ndarray:
    """Raw values, one flattened sample per row, reshaped to (N, *input_shape); a non-numeric first row
    is taken for a header and skipped."""
    n_features = int(np.prod(input_shape))
    rows: list[list[float]] = []
    try:
        with open(path, newline="") as f:
            for line_no, row in enumerate(csv.reader(f), start=1):
                cells = [c.strip() for c in row]
                if not any(cells):
                    continue
                try:
                    values = [float(c) for c in cells]
                except ValueError:
                    if line_no == 1:
                        continue  # a header
                    raise DataError(
                        f"{path}: line {line_no} has a value that is not a number; every row after an "
                        f"optional header must hold {n_features} numbers"
                    ) from None
                if len(values) != n_features:
                    raise DataError(
                        f"{path}: line {line_no} has {len(values)} values, but this model takes "
                        f"{n_features} per row (shape {_shape_str(input_shape)} flattened); give one sample per row"
                    )
                rows.append(values)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(
            f"{path}: cannot be read as a CSV file ({e}); give one sample per row, {n_features} numbers "
            "each, comma-separated"
        ) from None
    if not rows:
        raise DataError(f"{path}: no rows of numbers; give one sample per row, {n_features} numbers each")
    return np.asarray(rows, dtype=np.float64).reshape((len(rows), *input_shape))


def _load_inputs(path: Path, meta: dict[str, Any]) -> tuple[list[str], np.ndarray]:
    """Names and [0, 1]-scale float32 inputs (N, *input_shape) from one file."""
    input_shape = tuple(meta["input_shape"])
    if not path.is_file():
        raise DataError(f"{path}: no such file; give image files (for image models), .npy or .csv files")
    ext = path.suffix.lower()
    if ext in IMAGE_EXTENSIONS:
        return [path.name], _read_image(path, input_shape)
    if ext == ".npy":
        raw, batched = _read_npy(path, input_shape)
        names = [f"{path.name}[{i}]" for i in range(len(raw))] if batched else [path.name]
    elif ext == ".csv":
        raw = _read_csv(path, input_shape)
        names = [f"{path.name}[{i}]" for i in range(len(raw))]
    else:
        kinds = f"images ({', '.join(IMAGE_EXTENSIONS)}), .npy or .csv" if len(input_shape) == 3 else ".npy or .csv"
        raise DataError(f"{path}: unsupported file type {ext or '(no extension)'!r}; this model takes {kinds} files")
    x = np.asarray(raw, dtype=np.float64) * float(meta["input_scale"])
    if not np.all(np.isfinite(x)):
        raise DataError(f"{path}: holds NaN or infinite values; give finite raw values")
    return names, x.astype(np.float32)


@torch.no_grad()
def predict_inputs(export_dir: str | Path, inputs: list[str]) -> list[Prediction]:
    """One `Prediction` per input sample of the given files, with the state_dict model of `export_dir`
    (an export directory or an experiment directory), loaded with `weights_only=True`.

    Image files (PNG, JPEG, ...) are converted to the model's channels (L or RGB), resized to its H x W
    (bilinear) and divided by 255. `.npy` files of shape (N, *input_shape) or (*input_shape), and `.csv`
    files with one flattened sample per row (an optional non-numeric header is skipped), hold raw
    dataset values and are multiplied by `input_scale`. Every file is read before any prediction: a bad
    one raises `DataError` naming it and the shape expected.
    """
    model, meta = load_student(resolve_export_dir(export_dir))
    names: list[str] = []
    batches: list[np.ndarray] = []
    for item in inputs:
        n, x = _load_inputs(Path(item), meta)
        names.extend(n)
        batches.append(x)
    if not names:
        return []
    cls_p, sub_p = _probabilities(model, meta, torch.from_numpy(np.concatenate(batches)))
    class_names, subclass_names = meta["class_names"], meta["subclass_names"]
    preds = []
    for name, cp, sp in zip(names, cls_p, sub_p, strict=True):
        k = int(np.argmax(cp))
        preds.append(
            Prediction(
                name=name,
                class_name=str(class_names[k]),
                probability=float(cp[k]),
                class_probabilities={str(c): float(p) for c, p in zip(class_names, cp)},
                subclass_probabilities={str(s): float(p) for s, p in zip(subclass_names, sp)},
            )
        )
    return preds


def format_predictions(preds: list[Prediction]) -> str:
    """One line per input: `NAME: CLASS (p=0.981) | subclasses: 3 0.95, 2 0.02, ...` (the top 5)."""
    lines = []
    for p in preds:
        subs = ", ".join(f"{s} {q:.2f}" for s, q in p.top_subclasses())
        lines.append(f"{p.name}: {p.class_name} (p={p.probability:.3f}) | subclasses: {subs}")
    return "\n".join(lines)
