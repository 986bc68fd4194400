"""What a run says about its data: the first line it prints, and the data summary it records (splits,
classes, subclasses with their counts, the label bits H(S|C) the subclasses add)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..spec import Spec
from .base import Dataset

__all__ = ["data_line", "data_summary"]


def data_line(data: Dataset, bits: float) -> str:
    sizes = f"train/val/test {len(data.train)}/{len(data.val)}/{len(data.test)}, {data.num_classes} classes"
    if data.invented:
        return (
            f"data {data.name}: {sizes}; the teacher invents {data.outputs_per_group} subclasses per class "
            f"({data.num_outputs} outputs; the known {data.num_subclasses} subclasses, H(S|C) = {bits:.4f} bits, serve "
            "only to score them)"
        )
    extra = f"; {data.outputs_per_group} teacher outputs per subclass" if data.outputs_per_group > 1 else ""
    return f"data {data.name}: {sizes}, {data.num_subclasses} subclasses, H(S|C) = {bits:.4f} bits per training sample{extra}"


def data_summary(spec: Spec, data: Dataset, bits: float) -> dict[str, Any]:
    """The data summary: splits, classes, subclasses with their counts, and the label bits H(S|C)."""
    counts = {
        name: np.bincount(data.split(name).subclass, minlength=data.num_subclasses).tolist()
        for name in ("train", "val", "test")
    }
    return {
        "source": data.name,
        "subclasses": spec.data.subclass_scheme,
        "class_names": data.class_names,
        "subclass_names": data.subclass_names,
        "subclass_to_class": data.subclass_to_class.tolist(),
        "positive_class": data.class_names[data.positive_class],
        "split_sizes": {name: len(data.split(name)) for name in ("train", "val", "test")},
        "subclass_counts": counts,
        "label_bits_train": bits,
        "outputs": {
            "invented": data.invented,
            "outputs_per_group": data.outputs_per_group,
            "names": data.output_names,
            "output_to_class": data.output_to_class.tolist(),
        },
        "difficulty": "annotator agreement" if data.train.difficulty is not None else "teacher loss (for a curriculum)",
        "teacher_logits": "clean inputs, cached once (no augmentation)",
    }
