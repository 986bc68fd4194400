"""A teacher made elsewhere (`teacher.source: checkpoint | logits`): loaded and checked against the data.

    checkpoint   `teacher.path` is a TorchScript file (`torch.jit.load`), or else a state_dict of the
                 registry model `teacher.model` (`torch.load(weights_only=True)`; a checkpoint of this tool,
                 {"model": ..., "best": ...}, works too, as does a state_dict of the bare network without the
                 normalisation layer). It takes inputs scaled to [0, 1] (x * the data's scale), as the
                 registry models and the exported students do, and returns logits (B, W), or a pair
                 (logits, embeddings (B, D)). A registry model's embeddings are the input of its last Linear.
    logits       `teacher.path` is a directory with `{train,val,test}.npy` (N, W) float, rows in the data's
                 order, the `order.json` of `skd-tune data export-order` (order.py), and, for
                 `data.subclasses: clustered`, `{train,val,test}_embeddings.npy` (N, D).

W, the teacher's outputs, must be the data's classes with `data.subclasses: clustered` (its subclasses are
found in the embeddings, clusters.py), else the data's outputs (its known subclasses, or G*K invented
ones); `teacher.outputs` (classes | subclasses) says which the user meant, or it is read from W. Every
mismatch is a `DataError` or `CheckpointError` naming the file, what was found, what was expected and the fix.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..data import Dataset, class_view
from ..errors import DataError, first_line
from ..spec import Spec
from .order import SPLITS, check_order

__all__ = ["TeacherOutputs", "check_width", "expected_width", "file_sha256", "load_precomputed", "resolve_path"]


@dataclass
class TeacherOutputs:
    """A teacher's logits (N, W) of every split, its embeddings (N, D) or None, and what the teacher stage
    records about where they came from."""

    logits: dict[str, np.ndarray]
    embeddings: dict[str, np.ndarray] | None
    record: dict[str, Any] = field(default_factory=dict)


def resolve_path(spec: Spec, kind: str) -> Path:
    """`teacher.path` (relative: from the current directory), which must be a `kind` ("file", "directory")."""
    path = Path(spec.teacher.path).expanduser()
    ok = path.is_file() if kind == "file" else path.is_dir()
    if not ok:
        raise DataError(
            f"teacher.path: {path} is not an existing {kind} (relative paths are read from {Path.cwd()}); "
            f"teacher.source: {spec.teacher.source} needs one"
        )
    return path.resolve()


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def expected_width(data: Dataset) -> tuple[int, str]:
    """(the teacher outputs the data needs, those outputs in words)."""
    view = class_view(data)
    if data.clustered:
        return view.num_outputs, f"the {view.num_outputs} classes of {data.name} (data.subclasses: clustered)"
    kind = "invented subclass outputs" if data.invented else "subclass outputs"
    return data.num_outputs, f"the {data.num_outputs} {kind} of {data.name}"


def check_width(where: str, width: int, data: Dataset, outputs: str | None) -> None:
    """`DataError` naming `where` unless `width` (the teacher's outputs per sample) is what the data needs."""
    want, words = expected_width(data)
    if width == want:
        return
    hint = ""
    if not data.clustered and width == data.num_classes:
        hint = (
            "; it gives class logits: set data.subclasses: clustered with data.subclasses_per_class: K to find "
            "subclasses in its embeddings"
        )
    elif data.clustered and width == data.num_subclasses:
        hint = "; it gives subclass logits: remove data.subclasses: clustered to distil them as they are"
    said = f" (teacher.outputs: {outputs})" if outputs else ""
    raise DataError(
        f"{where}: the teacher gives {width} outputs per sample, but {want} are expected{said}: {words}{hint}"
    )


def _load_array(path: Path, rows: int, what: str) -> np.ndarray:
    try:
        arr = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"{path}: missing; {what}") from None
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"{path}: cannot read as a .npy array ({first_line(e)}); write it with numpy.save") from None
    if arr.ndim != 2 or len(arr) != rows:
        raise DataError(
            f"{path}: shape {arr.shape}, but this split has {rows} samples: one row per sample, in the order of "
            "the data (`skd-tune data export-order`) is expected"
        )
    if not np.issubdtype(arr.dtype, np.number) or not np.isfinite(arr).all():
        raise DataError(f"{path}: holds values that are not finite numbers; every logit must be finite")
    return arr.astype(np.float32)


def load_precomputed(spec: Spec, data: Dataset) -> TeacherOutputs:
    """The logits (and embeddings) of `teacher.source: logits`, checked: order.json, rows, width."""
    directory = resolve_path(spec, "directory")
    check_order(directory, data)
    logits, embeddings = {}, {}
    for name in SPLITS:
        rows = len(data.split(name))
        logits[name] = _load_array(directory / f"{name}.npy", rows, f"the teacher's logits of the {name} split")
        check_width(str(directory / f"{name}.npy"), logits[name].shape[1], data, spec.teacher.outputs)
        if data.clustered:
            what = "data.subclasses: clustered needs the teacher's penultimate embeddings beside its logits"
            embeddings[name] = _load_array(directory / f"{name}_embeddings.npy", rows, what)
    record = {"source": "logits", "path": str(directory), "order": "checked against order.json"}
    return TeacherOutputs(logits, embeddings or None, record)
