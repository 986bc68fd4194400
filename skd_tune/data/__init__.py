"""Datasets as arrays: inputs (uint8 or float32), subclass labels, and the subclass -> class map.

A source is a function `load(spec: DataSpec, seed: int) -> Dataset` in the `SOURCES` registry. The
class of a sample is always derived from its subclass (`Dataset.subclass_to_class`), so the same code
serves known subclasses (digits, MHIST agreement levels) and invented ones: `Dataset.invented` and
`Dataset.outputs_per_group` say what the models output (see `with_outputs`).
"""

from .base import DataError, Dataset, Source, Split, class_view, stratified_split, train_rows, with_outputs
from .sources import SOURCES, load_dataset

__all__ = [
    "Dataset",
    "DataError",
    "SOURCES",
    "Source",
    "Split",
    "class_view",
    "load_dataset",
    "stratified_split",
    "train_rows",
    "with_outputs",
]
