"""The order of the samples that precomputed teacher logits must follow, and the hash that records it.

`teacher.source: logits` reads one row of logits per sample, in the order of the data's splits. That order
depends on the data, `seed`, `data.val_fraction` and `data.test_fraction`; a file computed for another
order would silently pair each sample with another's logits. So the logits directory carries an
`order.json`, written by `skd-tune data export-order SPEC DIR` together with the inputs to compute the
logits of (`DIR/{train,val,test}_x.npy`, rows in the data's order), and the loader refuses logits whose
recorded hash is not the data's.

The hash of a split is sha256 over its inputs' shape, dtype and bytes and its subclass labels, in order:
any other order, sample or label gives another hash.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import write_atomic, write_json_atomic
from ..data import Dataset
from ..errors import DataError

__all__ = ["ORDER_FILE", "SPLITS", "check_order", "export_order", "order_hashes"]

ORDER_FILE = "order.json"
SPLITS = ("train", "val", "test")


def order_hashes(data: Dataset) -> dict[str, str]:
    """{split: the sha256 (hex) of its inputs and subclass labels, in order}."""
    out = {}
    for name in SPLITS:
        split = data.split(name)
        x = np.ascontiguousarray(split.x)
        h = hashlib.sha256(f"{x.shape}|{x.dtype}|".encode())
        h.update(x.tobytes())
        h.update(np.ascontiguousarray(split.subclass, dtype=np.int64).tobytes())
        out[name] = h.hexdigest()
    return out


def export_order(data: Dataset, out_dir: str | Path) -> Path:
    """Write `{split}_x.npy` (the inputs as the data holds them; times `scale` they lie in [0, 1]),
    `{split}_class.npy` (class labels) and `order.json` (the hashes) into `out_dir`; returns order.json's path.
    Compute the teacher's logits of each `{split}_x.npy`, row by row, and save them beside it as `{split}.npy`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in SPLITS:
        for suffix, arr in (("x", data.split(name).x), ("class", data.classes(name))):
            write_atomic(out / f"{name}_{suffix}.npy", lambda f, arr=arr: np.save(f, np.asarray(arr)))
    record = {
        "order": order_hashes(data),
        "rows": {name: len(data.split(name)) for name in SPLITS},
        "data": data.name,
        "scale": data.scale,
        "class_names": data.class_names,
        "written_by": "skd-tune data export-order",
    }
    write_json_atomic(out / ORDER_FILE, record)
    return out / ORDER_FILE


def check_order(directory: Path, data: Dataset) -> dict[str, Any]:
    """The `order.json` of a logits directory, checked against the data's order; `DataError` naming the
    file when it is missing, damaged, or records another order."""
    path = directory / ORDER_FILE
    redo = (
        f"run `skd-tune data export-order SPEC {directory}` with this spec and compute the logits again from the "
        f"{{train,val,test}}_x.npy it writes, row by row"
    )
    try:
        record = json.loads(path.read_text())
        recorded = {name: str(record["order"][name]) for name in SPLITS}
    except FileNotFoundError:
        raise DataError(
            f"{path}: missing; precomputed logits must record the sample order they were computed in: {redo}"
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DataError(f"{path}: not an order.json of `skd-tune data export-order` ({e!r}); {redo}") from None
    actual = order_hashes(data)
    wrong = [name for name in SPLITS if recorded[name] != actual[name]]
    if wrong:
        raise DataError(
            f"{path}: the logits of the {', '.join(wrong)} split(s) were computed for another sample order than "
            f"this data's (hash {recorded[wrong[0]][:12]}..., this data {actual[wrong[0]][:12]}...): the data, "
            f"seed, data.val_fraction or data.test_fraction differ; {redo}"
        )
    return record
