"""Deployment artefacts of an exported student, one per entry of the registry `FORMATS`, each reloaded
and checked against the PyTorch model.

`skd-tune export EXPERIMENT --out DIR` (`export_artifacts`) writes, per format:

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
largest absolute difference of its logits from the PyTorch model's must stay within its format's
`tolerance`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic import write_json_atomic
from ..errors import CheckpointError, UserError
from .artifact import StudentWithClassLogits, check_export_dir, load_student
from .writers import (
    INPUT_NAME,
    ONNX_INSTALL,
    OUTPUT_NAMES,
    Logits,
    load_onnx,
    load_state_dict,
    load_torchscript,
    write_onnx,
    write_state_dict,
    write_torchscript,
)

__all__ = [
    "CHECK_BATCH",
    "FORMATS",
    "ONNX_INSTALL",
    "TRACE_BATCH",
    "ArtifactCheck",
    "ExportFormat",
    "export_artifacts",
    "format_export",
]

TRACE_BATCH = 4  # batch size of the example input the TorchScript/ONNX graphs are traced with
CHECK_BATCH = 16  # batch size of the check: differs from TRACE_BATCH to prove the dynamic batch axis
CHECK_SEED = 0


@dataclass(frozen=True)
class ExportFormat:
    """One deployment format: how its artefact is written, reloaded and checked.

    `write(wrapper, example, path) -> detail` writes the artefact of `wrapper` (the student and its
    class head, traced with `example` where the format traces) atomically to `path` and says how it was
    made. `load(path) -> run` reloads it: `run(x)` gives its (subclass, class) logits for a batch of
    [0, 1] inputs, as tensors. `extra`: the skd-tune extra the format needs, whose `modules` are
    imported first (the format is skipped when one is missing); `runtime`: what runs the artefact.
    """

    file_name: str
    write: Callable[[StudentWithClassLogits, torch.Tensor, Path], str]
    load: Callable[[Path], Callable[[torch.Tensor], Logits]]
    tolerance: float  # largest absolute logit difference from the PyTorch model that passes the check
    use: str  # how to load and call it (written into meta.json)
    extra: str | None = None
    modules: tuple[str, ...] = ()
    runtime: str = "torch"

    @property
    def install(self) -> str:
        """The command that installs the extra this format needs ("" when it needs none)."""
        return f"pip install 'skd-tune[{self.extra}]'" if self.extra else ""

    def check(self, path: Path, x: torch.Tensor, reference: Logits) -> float:
        """Reload the artefact at `path`, run it on `x` and return the largest absolute difference of its
        logits from `reference` (inf when their shapes differ)."""
        return _max_abs_diff(self.load(path)(x), reference)


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


# --------------------------------------------------------------------------------------------------
# Writers and checkers


def _max_abs_diff(outputs: tuple, reference: Logits) -> float:
    diffs = []
    for out, ref in zip(outputs, reference, strict=True):
        out = torch.as_tensor(np.asarray(out)) if not isinstance(out, torch.Tensor) else out
        if tuple(out.shape) != tuple(ref.shape):
            return float("inf")
        diffs.append(float((out.float() - ref).abs().max()))
    return max(diffs)


# format name -> how its artefact is written, reloaded and checked; `export_artifacts` keeps this order
_USE = {
    "state_dict": "skd_tune.serve.load_student(DIR) (torch.load(weights_only=True) + build_model); "
    "the bare student: outputs subclass logits only",
    "torchscript": "torch.jit.load(path); module(x) -> (subclass_logits, class_logits)",
    "onnx": "onnxruntime.InferenceSession(path).run(None, {'input': x}) -> [subclass_logits, class_logits]",
}
# (file name, writer, loader, tolerance: the largest absolute logit difference from the PyTorch model)
FORMATS: dict[str, ExportFormat] = {
    "state_dict": ExportFormat("model.pt", write_state_dict, load_state_dict, 1e-4, _USE["state_dict"]),
    "torchscript": ExportFormat("model.torchscript.pt", write_torchscript, load_torchscript, 1e-4, _USE["torchscript"]),
    "onnx": ExportFormat(
        "model.onnx", write_onnx, load_onnx, 1e-3, _USE["onnx"], "onnx", ("onnx", "onnxruntime"), "onnxruntime"
    ),
}


# --------------------------------------------------------------------------------------------------
# The export


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


def _missing_module(fmt: ExportFormat) -> str | None:
    """The first of the format's modules that cannot be imported, or None when all can."""
    for module in fmt.modules:
        try:
            importlib.import_module(module)
        except ImportError as e:
            return getattr(e, "name", None) or "/".join(fmt.modules)
    return None


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


def _file_entry(c: ArtifactCheck) -> dict[str, Any]:
    if c.skipped:
        return {"skipped": c.skipped}
    return {
        "path": c.path.name,
        "use": FORMATS[c.format].use,
        "made_with": c.detail,
        "max_abs_diff": c.max_abs_diff,
        "tolerance": c.tolerance,
        "check_batch": c.batch,
    }


def export_artifacts(export_dir: str | Path, out_dir: str | Path, formats: list[str]) -> list[ArtifactCheck]:
    """Write the student exported in `export_dir` into `out_dir` in each of `formats` (keys of `FORMATS`),
    reload each artefact and compare its logits with the PyTorch model's on a fixed batch; one check per
    format, in the order given.

    `export_dir`: an export directory (`model.pt` + `meta.json`, see `check_export_dir`). `meta.json` is
    always written to `out_dir`, with the artefacts' interface under "artefacts". A format whose extra
    is not installed (onnx) is skipped, the check saying why. Raises `UserError` for an unknown format
    or a directory with nothing exported, `CheckpointError` when an artefact differs from the model by
    more than its format's tolerance (the artefact is removed).
    """
    wanted = _check_formats(list(formats))
    src = check_export_dir(export_dir)
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
    for name, fmt in FORMATS.items():
        if name not in wanted and not same_dir:
            (out / fmt.file_name).unlink(missing_ok=True)
    write_json_atomic(out / "meta.json", out_meta)

    checks: list[ArtifactCheck] = []
    for name in wanted:
        fmt = FORMATS[name]
        path = out / fmt.file_name
        missing = _missing_module(fmt)
        if missing is not None:
            if not same_dir:
                path.unlink(missing_ok=True)  # stale: would not match this meta.json
            reason = f"{missing} is not installed; {fmt.install}"
            checks.append(ArtifactCheck(name, None, None, fmt.tolerance, skipped=reason))
            continue
        detail = fmt.write(wrapper, example, path)
        diff = fmt.check(path, x, ref)
        if not diff <= fmt.tolerance:
            path.unlink(missing_ok=True)
            runtime = "" if fmt.runtime == "torch" else f" and {fmt.runtime}"
            raise CheckpointError(
                f"{path}: the reloaded {name} artefact differs from the PyTorch model by {diff:.3g} in its logits on "
                f"a batch of {CHECK_BATCH} inputs (tolerance {fmt.tolerance:g}), so it was removed. Export without it "
                f"(--formats {','.join(f for f in FORMATS if f != name)}) and report the model {meta['model']!r} "
                f"and the versions of torch{runtime} as a bug"
            )
        checks.append(ArtifactCheck(name, path, diff, fmt.tolerance, detail=detail))

    out_meta["artefacts"]["files"] = {c.format: _file_entry(c) for c in checks}
    write_json_atomic(out / "meta.json", out_meta)
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
