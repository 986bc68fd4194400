"""What a run says about its data: the first line it prints, and the data summary it records (splits,
classes, subclasses with their counts, the label bits H(S|C) the subclasses add)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..metrics import label_bits
from ..spec import Spec
from .base import Dataset

__all__ = ["data_line", "data_summary", "partition_label_bits", "teacher_logits_note"]

# What Sajedi et al. (2022) report for MHIST's subclasses, and why it is not printed as ours.
_PAPER_NOTE = (
    "Sajedi et al. 2022 report 0.4656 bits for MHIST, which no grouping of its vote levels gives; "
    "its real votes give 1.920 with agreement, 0.932 with unanimous"
)


def partition_label_bits(data: Dataset) -> float:
    """H(S|C) of the known subclasses over the training partition (train + val: what is not test), in bits
    (`metrics.label_bits`). On MHIST that is its `train` partition, as the paper's figures."""
    return label_bits(np.concatenate([data.train.subclass, data.val.subclass]), data.subclass_to_class)


def teacher_logits_note(spec: Spec) -> str:
    """What the students distil, in words (the data summary and the exported student's meta.json)."""
    if spec.teacher_logits == "views":
        return "the 8 views (flips and 90-degree turns) of each training image, cached once; colour jitter undistilled"
    return "clean inputs, cached once (no augmentation)"


def data_line(data: Dataset, bits: float) -> str:
    sizes = f"train/val/test {len(data.train)}/{len(data.val)}/{len(data.test)}, {data.num_classes} classes"
    if data.invented:
        how = "clusters of the teacher's embeddings give" if data.clustered else "the teacher invents"
        return (
            f"data {data.name}: {sizes}; {how} {data.outputs_per_group} subclasses per class "
            f"({data.num_outputs} outputs; the known {data.num_subclasses} subclasses, H(S|C) = {bits:.3f} bits, serve "
            "only to score them)"
        )
    extra = f"; {data.outputs_per_group} teacher outputs per subclass" if data.outputs_per_group > 1 else ""
    note = f" ({_PAPER_NOTE})" if data.name == "mhist" else ""
    return (
        f"data {data.name}: {sizes}, {data.num_subclasses} subclasses, H(S|C) = {bits:.3f} bits per training "
        f"sample{note}{extra}"
    )


def data_summary(spec: Spec, data: Dataset, bits: float) -> dict[str, Any]:
    """The data summary: splits, classes, subclasses with their counts, and the label bits H(S|C) over the
    training partition (`partition_label_bits`)."""
    counts = {
        name: np.bincount(data.split(name).subclass, minlength=data.num_subclasses).tolist()
        for name in ("train", "val", "test")
    }
    return {
        "source": data.name,
        "subclasses": spec.data.subclass_scheme,
        # with subclasses "votes": the grouping of MHIST's SSA vote counts, {"HP": [[0], [1], [2, 3]], ...}
        "vote_groups": (
            {c: [list(g) for g in gs] for c, gs in spec.data.vote_groups.items()} if spec.data.vote_groups else None
        ),
        "class_names": data.class_names,
        "subclass_names": data.subclass_names,
        "subclass_to_class": data.subclass_to_class.tolist(),
        "positive_class": data.class_names[data.positive_class],
        "split_sizes": {name: len(data.split(name)) for name in ("train", "val", "test")},
        "subclass_counts": counts,
        "label_bits_train": bits,
        "outputs": {
            "invented": data.invented,
            "clustered": data.clustered,
            "outputs_per_group": data.outputs_per_group,
            "names": data.output_names,
            "output_to_class": data.output_to_class.tolist(),
        },
        "difficulty": "annotator agreement" if data.train.difficulty is not None else "teacher loss (for a curriculum)",
        "teacher_logits": teacher_logits_note(spec),
    }
