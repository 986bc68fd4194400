"""MHIST (Wei et al. 2021): colorectal polyp images, HP vs SSA, with subclasses by annotator agreement
or by a grouping of the SSA vote counts.

Layout of `data.root` (MHIST's own; `skd-tune data synth-mhist DIR` writes a synthetic one)::

    annotations.csv   Image Name, Majority Vote Label (HP | SSA),
                      Number of Annotators who Selected SSA (Out of 7) (0-7), Partition (train | test)
    images/           the PNGs named in `Image Name` (RGB, 224 x 224)

Every image is decoded once into a uint8 array (N, 3, H, W) and cached as an .npy file in
`data.cache_dir` (default `<root>/.skd_cache/`), keyed by the CSV's contents, the image size and the
image files' sizes and modification times, so a changed dataset is decoded again.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from sklearn.model_selection import train_test_split

from ..atomic import write_atomic
from ..errors import first_line
from .base import DataError, Dataset, Split
from .images import decode_image
from .mhist_annotations import (
    ANNOTATIONS,
    CLASS_NAMES,
    IMAGES,
    SCHEMES,
    Annotations,
    read_annotations,
    subclasses_for,
    subclasses_for_votes,
)

if TYPE_CHECKING:
    from ..spec import DataSpec

__all__ = [
    "ANNOTATIONS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SCHEMES",
    "load_mhist_dataset",
    "read_annotations",
    "subclasses_for",
    "subclasses_for_votes",
]

DEFAULT_SIZE = 224
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
_CACHE_VERSION = b"skd-tune mhist cache v1"


def _image_paths(ann: Annotations, images: Path) -> tuple[list[Path], list[tuple[int, int]]]:
    """Paths of the images and their (size, mtime_ns); DataError naming a missing one."""
    paths, stats, missing = [], [], []
    for name, line in zip(ann.names, ann.lines):
        p = images / name
        try:
            st = p.stat()
        except OSError:
            missing.append((p, int(line)))
            continue
        if not p.is_file():
            missing.append((p, int(line)))
            continue
        paths.append(p)
        stats.append((st.st_size, st.st_mtime_ns))
    if missing:
        p, line = missing[0]
        more = f" (and {len(missing) - 1} more listed image(s) missing)" if len(missing) > 1 else ""
        raise DataError(
            f"{p}: image file missing (listed on line {line} of {ann.path}){more}; add the file to {images}/ "
            "or remove its row from the CSV"
        )
    return paths, stats


def _cache_key(ann: Annotations, size: int, stats: list[tuple[int, int]]) -> str:
    h = hashlib.sha256(_CACHE_VERSION)
    h.update(b"\0size=%d\0" % size)
    h.update(ann.raw)
    for name, (nbytes, mtime) in zip(ann.names, stats):
        h.update(f"\0{name}\0{nbytes}\0{mtime}".encode())
    return h.hexdigest()


def _decode_one(path: Path, size: int, line: int, csv_path: Path) -> np.ndarray:
    try:
        return decode_image(path, size)
    except ValueError as e:
        raise DataError(
            f"{path}: not a readable image ({first_line(e)}); listed on line {line} of {csv_path}. Replace it with "
            "the RGB PNG or remove its row from the CSV"
        ) from None


def _decode_images(paths: list[Path], lines: np.ndarray, size: int, csv_path: Path) -> np.ndarray:
    """Every image as uint8 (N, 3, size, size): converted to RGB, resized where needed; thread pool."""
    x = np.empty((len(paths), 3, size, size), dtype=np.uint8)

    def work(i: int) -> None:
        x[i] = _decode_one(paths[i], size, int(lines[i]), csv_path)

    workers = max(1, min(8, os.cpu_count() or 1, len(paths)))
    with ThreadPoolExecutor(workers) as pool:
        for _ in pool.map(work, range(len(paths))):  # re-raises the first DataError in file order
            pass
    return x


def _read_cache(path: Path, shape: tuple[int, ...]) -> np.ndarray | None:
    try:
        x = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, EOFError):
        return None  # damaged (e.g. truncated): decode again and overwrite it
    if x.shape != shape or x.dtype != np.uint8:
        return None
    return x


def _write_cache(path: Path, x: np.ndarray, stale_glob: str) -> str | None:
    """Write `x` atomically; remove older caches of the same dataset.
    Returns None, or the reason the cache could not be written (the load goes on without it)."""
    try:
        write_atomic(path, lambda f: np.save(f, x, allow_pickle=False))
    except OSError as e:
        return f"{e.strerror or e}"
    for old in path.parent.glob(stale_glob):
        if old != path:
            with contextlib.suppress(OSError):
                old.unlink()
    return None


def _images(ann: Annotations, root: Path, size: int, cache_dir: Path) -> tuple[np.ndarray, Path | None, bool]:
    """(x, cache path or None when it could not be written, whether the images were decoded now)."""
    paths, stats = _image_paths(ann, root / IMAGES)
    key = _cache_key(ann, size, stats)
    where = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:8]  # one dataset, one live cache
    cache = cache_dir / f"mhist-{where}-{size}px-{key[:20]}.npy"
    shape = (len(paths), 3, size, size)
    x = _read_cache(cache, shape)
    if x is not None:
        return x, cache, False
    x = _decode_images(paths, ann.lines, size, ann.path)
    problem = _write_cache(cache, x, f"mhist-{where}-{size}px-*.npy")
    if problem is not None:
        warnings.warn(
            f"{cache}: could not write the decoded-image cache ({problem}); set data.cache_dir to a "
            "writable directory to avoid decoding again next time",
            stacklevel=3,
        )
        return x, None, True
    return x, cache, True


# --------------------------------------------------------------------------------------------------
# The source


def _val_split(subclass: np.ndarray, s2c: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (sorted) of train and val, stratified by subclass; by class, then not at all, where a
    stratum is too small for that (fewer than 2 samples, or more strata than samples on a side)."""
    n = len(subclass)
    n_val = max(1, math.ceil(val_fraction * n))
    idx = np.arange(n)
    for strata in (subclass, s2c[subclass], None):
        if strata is None:
            break
        counts = np.bincount(strata)
        k = int(np.count_nonzero(counts))
        if counts[counts > 0].min() >= 2 and k <= n_val and k <= n - n_val:
            break
    tr, va = train_test_split(idx, test_size=n_val, stratify=strata, random_state=seed)
    return np.sort(tr), np.sort(va)


def load_mhist_dataset(spec: DataSpec, seed: int) -> Dataset:
    """MHIST from `spec.root`: HP vs SSA (the positive class), subclasses by annotator agreement.

    * Subclasses (`data.subclasses`): `agreement` (default), 8 subclasses HP-7/7 ... HP-4/7,
      SSA-7/7 ... SSA-4/7 (agreement = annotators of 7 who chose the majority label); or `unanimous`,
      4 subclasses HP-unanimous, HP-split, SSA-unanimous, SSA-split; or a grouping of the SSA vote counts
      (0-7 of the 7 annotators; HP images have 0-3, SSA images 4-7), e.g. {HP: [[0], [1], [2, 3]],
      SSA: [[4, 5], [6], [7]]}: one subclass per group, HP's in the order given, then SSA's, named
      HP-0, HP-1, HP-2..3, SSA-4..5, ... (a group that is not a run of counts as HP-1,3). The grouping
      {HP: [[0], [1], [2], [3]], SSA: [[4], [5], [6], [7]]} is `agreement` (another order and names);
      {HP: [[0], [1, 2, 3]], SSA: [[4, 5, 6], [7]]} is `unanimous`.
    * Splits: test is the CSV's `test` partition; val is `data.val_fraction` of the `train`
      partition, stratified by subclass and drawn from `seed`; the rest is train.
      `data.test_fraction` is ignored: MHIST fixes its own test partition.
    * `difficulty` of every sample: (7 - agreement) / 3, 0 for unanimous to 1 for a 4-3 split (with a
      grouping too).
    * Images: uint8 (N, 3, S, S) with S = `data.image_size` (default 224); an image of another size or
      mode is converted to RGB and resized. `scale` 1/255, ImageNet's mean/std for normalisation.
    """
    scheme = spec.subclass_scheme  # with `invented`, the known scheme that scores the invented subclasses
    groups = spec.vote_groups  # a grouping of the SSA vote counts (scheme "votes"), or None
    if groups is None and scheme not in SCHEMES:
        raise DataError(
            f"data.subclasses: {scheme!r} is not a subclass scheme of source 'mhist'; available: {', '.join(SCHEMES)}"
        )
    root = Path(spec.root)
    if root.is_file():  # the CSV itself was given
        csv_path, root = root, root.parent
    else:
        csv_path = root / ANNOTATIONS
    size = int(spec.image_size or DEFAULT_SIZE)
    ann = read_annotations(csv_path)
    agreement = ann.agreement
    if groups is not None:
        subclass, subclass_names, s2c = subclasses_for_votes(groups, ann.label, ann.votes)
    else:
        subclass, subclass_names, s2c = subclasses_for(scheme, ann.label, agreement)
    difficulty = ((7 - agreement) / 3.0).astype(np.float32)
    cache_dir = Path(spec.cache_dir) if spec.cache_dir else root / ".skd_cache"
    x, cache, decoded = _images(ann, root, size, cache_dir)

    train_rows = np.flatnonzero(~ann.test)
    test_rows = np.flatnonzero(ann.test)
    tr, va = _val_split(subclass[train_rows], s2c, spec.val_fraction, seed)
    tr, va = train_rows[tr], train_rows[va]

    def split(rows: np.ndarray) -> Split:
        return Split(x[rows], subclass[rows], difficulty[rows])

    class_names = list(CLASS_NAMES)
    positive = class_names.index("SSA")
    if spec.positive_class is not None:
        if spec.positive_class not in class_names:
            raise DataError(
                f"data.positive_class: {spec.positive_class!r} is not a class of mhist; classes: {', '.join(class_names)}"
            )
        positive = class_names.index(spec.positive_class)
    counts = np.bincount(subclass, minlength=len(subclass_names))
    return Dataset(
        name="mhist",
        train=split(tr),
        val=split(va),
        test=split(test_rows),
        class_names=class_names,
        subclass_names=subclass_names,
        subclass_to_class=s2c,
        scale=1.0 / 255.0,
        mean=list(IMAGENET_MEAN),
        std=list(IMAGENET_STD),
        positive_class=positive,
        info={
            "root": str(root),
            "annotations": str(csv_path),
            "subclass_scheme": scheme,
            "vote_groups": {c: [list(g) for g in gs] for c, gs in groups.items()} if groups is not None else None,
            "image_size": size,
            "images_per_subclass": {name: int(c) for name, c in zip(subclass_names, counts)},
            "images_per_split": {"train": len(tr), "val": len(va), "test": len(test_rows)},
            "cache": str(cache) if cache is not None else None,
            "decoded": decoded,
        },
    )
