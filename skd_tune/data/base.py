"""The in-memory dataset every stage works on, and the seeded stratified split."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sklearn.model_selection import train_test_split

from ..errors import DataError

__all__ = ["Dataset", "DataError", "Source", "Split", "stratified_split"]


@dataclass(frozen=True)
class Split:
    """One split: inputs `x` of shape (N, C, H, W) (or (N, F)), integer `subclass` labels (N,), and
    optionally a per-sample `difficulty` (N,) float, 0 = easiest (e.g. annotator disagreement), that
    orders the curriculum."""

    x: np.ndarray
    subclass: np.ndarray
    difficulty: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.subclass)


@dataclass(frozen=True)
class Dataset:
    """Train/val/test splits plus everything a model and a report need to interpret them.

    `x` arrays hold raw values; `x * scale` lies in [0, 1]. `mean`/`std` (per channel, on the [0, 1]
    scale) are the normalisation a model applies as its first layer.
    """

    name: str
    train: Split
    val: Split
    test: Split
    class_names: list[str]
    subclass_names: list[str]
    subclass_to_class: np.ndarray  # (S,) int64: class index of each subclass
    scale: float
    mean: list[float]
    std: list[float]
    positive_class: int = 1
    info: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_subclasses(self) -> int:
        return len(self.subclass_names)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train.x.shape[1:])

    def split(self, name: str) -> Split:
        return {"train": self.train, "val": self.val, "test": self.test}[name]

    def classes(self, name: str) -> np.ndarray:
        return self.subclass_to_class[self.split(name).subclass]


@dataclass(frozen=True)
class Source:
    """A registry entry: the loader, whether it reads files under `data.root`, and the ways of
    defining subclasses it supports (`data.subclasses`; the first is the default)."""

    load: object  # Callable[[DataSpec, int], Dataset]
    needs_root: bool
    description: str
    subclass_schemes: tuple[str, ...] = ("known",)


def stratified_split(
    subclass: np.ndarray, val_fraction: float, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of train/val/test, stratified by subclass (so by class too), reproducible from `seed`."""
    idx = np.arange(len(subclass))
    rest, test = train_test_split(idx, test_size=test_fraction, stratify=subclass, random_state=seed)
    val_share = val_fraction / (1.0 - test_fraction)
    train, val = train_test_split(rest, test_size=val_share, stratify=subclass[rest], random_state=seed)
    return np.sort(train), np.sort(val), np.sort(test)
