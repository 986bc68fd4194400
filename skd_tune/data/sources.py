"""The registry of data sources. `SOURCES[name].load(spec, seed) -> Dataset`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .. import names
from .base import DataError, Dataset, Source, Split, stratified_split, with_outputs
from .mhist import load_mhist_dataset

if TYPE_CHECKING:
    from ..spec import DataSpec

__all__ = ["SOURCES", "load_dataset", "load_digits_dataset", "load_mhist_dataset"]


def _from_arrays(
    name, x, subclass, subclass_to_class, class_names, subclass_names, scale, spec, seed, info=None
) -> Dataset:
    tr, va, te = stratified_split(subclass, spec.val_fraction, spec.test_fraction, seed)
    # Per-channel normalisation from the training split, on the [0, 1] scale.
    xt = x[tr].astype(np.float64) * scale
    axes = (0,) + tuple(range(2, xt.ndim)) if xt.ndim > 2 else (0,)
    mean = xt.mean(axis=axes)
    std = xt.std(axis=axes)
    std = np.where(std < 1e-6, 1.0, std)
    positive = len(class_names) - 1
    if spec.positive_class is not None:
        if spec.positive_class not in class_names:
            raise DataError(
                f"data.positive_class: {spec.positive_class!r} is not a class of {name}; classes: {', '.join(class_names)}"
            )
        positive = class_names.index(spec.positive_class)
    return Dataset(
        name=name,
        train=Split(x[tr], subclass[tr]),
        val=Split(x[va], subclass[va]),
        test=Split(x[te], subclass[te]),
        class_names=list(class_names),
        subclass_names=list(subclass_names),
        subclass_to_class=np.asarray(subclass_to_class, dtype=np.int64),
        scale=float(scale),
        mean=np.atleast_1d(mean).astype(float).tolist(),
        std=np.atleast_1d(std).astype(float).tolist(),
        positive_class=positive,
        info=info or {},
    )


def load_digits_dataset(spec: DataSpec, seed: int) -> Dataset:
    """scikit-learn's bundled digits (1,797 8x8 images): classes 0-4 vs 5-9, the ten digits as subclasses."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = bunch.images.astype(np.uint8)[:, None, :, :]  # (N, 1, 8, 8), values 0..16
    subclass = bunch.target.astype(np.int64)
    subclass_to_class = (np.arange(10) >= 5).astype(np.int64)
    return _from_arrays(
        "digits",
        x,
        subclass,
        subclass_to_class,
        ["0-4", "5-9"],
        [str(d) for d in range(10)],
        1.0 / 16.0,
        spec,
        seed,
    )


def load_npz_dataset(spec: DataSpec, seed: int) -> Dataset:
    """Your own arrays in one `.npz`: `x` (N, C, H, W) or (N, F), uint8 (0-255) or float in [0, 1];
    `subclass` (N,) ints; `subclass_to_class` (S,) ints; optional `class_names`, `subclass_names`."""
    path = spec.root
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read as an .npz file ({e}); write it with numpy.savez") from None
    missing = [k for k in ("x", "subclass", "subclass_to_class") if k not in arrays]
    if missing:
        raise DataError(
            f"{path}: missing array(s) {', '.join(missing)}; the file needs x, subclass and subclass_to_class"
        )
    x, sub, s2c = arrays["x"], arrays["subclass"].astype(np.int64), arrays["subclass_to_class"].astype(np.int64)
    if len(x) != len(sub):
        raise DataError(f"{path}: x has {len(x)} rows but subclass has {len(sub)}; they must match")
    if sub.min() < 0 or sub.max() >= len(s2c):
        raise DataError(f"{path}: subclass labels must lie in [0, {len(s2c) - 1}] (the length of subclass_to_class)")
    n_classes = int(s2c.max()) + 1
    class_names = [str(c) for c in arrays.get("class_names", np.arange(n_classes))]
    subclass_names = [str(s) for s in arrays.get("subclass_names", np.arange(len(s2c)))]
    scale = 1.0 / 255.0 if x.dtype == np.uint8 else 1.0
    if x.dtype != np.uint8:
        x = x.astype(np.float32)
    return _from_arrays("npz", x, sub, s2c, class_names, subclass_names, scale, spec, seed, {"path": str(path)})


# name -> (loader, description); whether a source reads data.root and its subclass schemes are the
# spec's names (names.SOURCES), so the spec validates without importing the loaders.
_LOADERS = {
    "digits": (load_digits_dataset, "scikit-learn digits, 0-4 vs 5-9"),
    "npz": (load_npz_dataset, "arrays x, subclass, subclass_to_class in one .npz"),
    "mhist": (
        load_mhist_dataset,
        "MHIST colorectal polyps (annotations.csv + images/), HP vs SSA; subclasses by annotator agreement",
    ),
}
SOURCES: dict[str, Source] = {
    name: Source(load, needs_root=names.SOURCES[name][0], description=text, subclass_schemes=names.SOURCES[name][1])
    for name, (load, text) in _LOADERS.items()
}


def load_dataset(spec: DataSpec, seed: int) -> Dataset:
    """Load the dataset the spec names, split with `seed`."""
    if spec.source not in SOURCES:
        raise DataError(f"data.source: unknown source {spec.source!r}; available: {', '.join(sorted(SOURCES))}")
    if SOURCES[spec.source].needs_root and not Path(spec.root).exists():
        raise DataError(
            f"data.root: path {spec.root!r} does not exist (relative paths are read from {Path.cwd()}); point it "
            "at the dataset"
        )
    return with_outputs(SOURCES[spec.source].load(spec, seed), spec.invented, spec.outputs_per_group, spec.clustered)
