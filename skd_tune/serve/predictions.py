"""Predictions of an exported student for files: `skd-tune predict DIR INPUT...`.

`predict_inputs` loads the state_dict model and gives, per input sample, the class, its probability
and the subclass probabilities: image files (PNG, JPEG, ...) for image models, decoded exactly as the
MHIST loader decodes its training images (`skd_tune.data.images.decode_image`), and `.npy` arrays or
`.csv` rows of raw dataset values for any model.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataError, first_line
from .artifact import check_export_dir, load_student, probabilities

__all__ = ["IMAGE_EXTENSIONS", "Prediction", "format_predictions", "predict_inputs"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
_TOP_SUBCLASSES = 5


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


def _shape_str(shape) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def _read_image(path: Path, input_shape: tuple[int, ...]) -> np.ndarray:
    """(1, C, H, W) float32 in [0, 1]: the image converted to L/RGB, resized (bilinear), divided by 255."""
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
    # Imported here: the skd_tune.data package loads scikit-learn, which predictions for arrays do without.
    from ..data.images import decode_image

    try:
        arr = decode_image(path, (h, w), channels=c)
    except ValueError as e:
        raise DataError(
            f"{path}: cannot be read as an image ({first_line(e)}); "
            f"give a PNG or JPEG file (this model takes {c}-channel {h}x{w} images)"
        ) from None
    return (arr.astype(np.float32) / 255.0)[None]


def _read_npy(path: Path, input_shape: tuple[int, ...]) -> tuple[np.ndarray, bool]:
    """Raw values of shape (N, *input_shape), and whether the file held a batch (else one sample)."""
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise DataError(
            f"{path}: cannot be read as a .npy array ({first_line(e)}); "
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
    """One `Prediction` per input sample of the given files, with the state_dict model of the export
    directory `export_dir` (see `check_export_dir`), loaded with `weights_only=True`.

    Image files (PNG, JPEG, ...) are converted to the model's channels (L or RGB), resized to its H x W
    (bilinear) and divided by 255. `.npy` files of shape (N, *input_shape) or (*input_shape), and `.csv`
    files with one flattened sample per row (an optional non-numeric header is skipped), hold raw
    dataset values and are multiplied by `input_scale`. Every file is read before any prediction: a bad
    one raises `DataError` naming it and the shape expected.
    """
    model, meta = load_student(check_export_dir(export_dir))
    names: list[str] = []
    batches: list[np.ndarray] = []
    for item in inputs:
        n, x = _load_inputs(Path(item), meta)
        names.extend(n)
        batches.append(x)
    if not names:
        return []
    cls_p, sub_p = probabilities(model, meta, torch.from_numpy(np.concatenate(batches)))
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
