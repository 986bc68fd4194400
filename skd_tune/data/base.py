"""The in-memory dataset every stage works on, and the seeded stratified split."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sklearn.model_selection import train_test_split

from ..errors import DataError

__all__ = ["Dataset", "DataError", "Source", "Split", "class_view", "stratified_split", "train_rows", "with_outputs"]


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
    # What the models output (see `with_outputs`): the teacher's target *groups* are the known
    # subclasses, or the classes when the subclasses are invented; each group has `outputs_per_group`
    # consecutive outputs (output o belongs to group o // outputs_per_group).
    invented: bool = False
    outputs_per_group: int = 1
    # `data.subclasses: clustered`: the K outputs per class are clusters of a class-output teacher's
    # embeddings (teachers/clusters.py), laid out as invented ones; the teacher itself sees `class_view`.
    clustered: bool = False

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    # -- the output space the teacher and the student share -----------------------------------------
    @property
    def group_to_class(self) -> np.ndarray:
        """(G,) class of each group: the identity when invented, else `subclass_to_class`."""
        return np.arange(self.num_classes, dtype=np.int64) if self.invented else self.subclass_to_class

    @property
    def group_names(self) -> list[str]:
        return list(self.class_names) if self.invented else list(self.subclass_names)

    @property
    def num_outputs(self) -> int:
        """S_out = G * K: the size of the teacher's and the student's subclass heads."""
        return len(self.group_to_class) * self.outputs_per_group

    @property
    def output_to_class(self) -> np.ndarray:
        """(S_out,) class of each output: what `class_logits` aggregates over."""
        return np.repeat(self.group_to_class, self.outputs_per_group)

    @property
    def output_to_group(self) -> np.ndarray:
        return np.repeat(np.arange(len(self.group_to_class), dtype=np.int64), self.outputs_per_group)

    @property
    def output_names(self) -> list[str]:
        """Names of the outputs: the subclass names, or `group/j` (j = 1..K) when a group has K > 1."""
        if self.outputs_per_group == 1:
            return self.group_names
        return [f"{g}/{j + 1}" for g in self.group_names for j in range(self.outputs_per_group)]

    def targets(self, name: str) -> np.ndarray:
        """The teacher's training target per sample of split `name`: its group (class or known subclass)."""
        return self.classes(name) if self.invented else self.split(name).subclass

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


def train_rows(subclass: np.ndarray, fraction: float, seed: int, field: str = "data.train_fraction") -> np.ndarray:
    """The rows of the training split a model trains on: all of them, or a `fraction` stratified by
    subclass and reproducible from `seed` (the same rows for every trial and method)."""
    idx = np.arange(len(subclass))
    if fraction >= 1.0:
        return idx
    try:
        rows, _ = train_test_split(idx, train_size=fraction, stratify=subclass, random_state=seed)
    except ValueError as e:
        raise DataError(
            f"{field}: {fraction:g} of the {len(idx)} training samples keeps too few of some subclass to "
            f"stratify ({str(e).splitlines()[0]}); raise {field}"
        ) from None
    return np.sort(rows)


def with_outputs(data: Dataset, invented: bool, outputs_per_group: int, clustered: bool = False) -> Dataset:
    """`data` with the models' output layout set: invented (or `clustered`) subclasses, `outputs_per_group`
    per class, or known subclasses with `outputs_per_group` outputs each. The known subclass labels stay in
    the splits (for the label bits and for comparing invented subclasses with them)."""
    from dataclasses import replace

    per_class = bool(invented or clustered)
    return replace(data, invented=per_class, outputs_per_group=int(outputs_per_group), clustered=bool(clustered))


def class_view(data: Dataset) -> Dataset:
    """The data as the teacher of clustered subclasses sees them: one output per class, trained on the
    class labels (`data` itself for every other layout)."""
    return with_outputs(data, True, 1) if data.clustered else data
