"""Where the teacher comes from (`teacher.source`) and subclasses found in its embeddings
(`data.subclasses: clustered`): the names, and the checks across spec sections, without I/O.

    teacher.source: train        the teacher is trained here (the default)
    teacher.source: checkpoint   teacher.path: a TorchScript file, or a state_dict of the registry model
                                 teacher.model; its outputs are class or subclass logits (teacher.outputs)
    teacher.source: logits       teacher.path: a directory of precomputed logits, {train,val,test}.npy in the
                                 data's order, with the order.json that `skd-tune data export-order` writes

Whether the files exist and fit the data is the loader's question (`skd_tune.teachers`); this module only
checks that the fields agree with each other, every problem in one message naming its fields.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .models import Spec

__all__ = ["CLUSTERED", "TEACHER_OUTPUTS", "TEACHER_SOURCES", "teacher_source_problems"]

CLUSTERED = "clustered"  # a scheme every source has: per-class k-means of the teacher's embeddings
TEACHER_SOURCES = ("train", "checkpoint", "logits")
TEACHER_OUTPUTS = ("classes", "subclasses")
_PATH_IS = {
    "checkpoint": "a TorchScript file, or a state_dict of the registry model teacher.model",
    "logits": "a directory with train.npy, val.npy, test.npy and the order.json of `skd-tune data export-order`",
}


def teacher_source_problems(spec: Spec) -> list[str]:
    """Every disagreement between `teacher.source`, `teacher.path`, `teacher.outputs`, `teacher.cluster_tau`,
    `data.subclasses`, `search.teacher` and `teacher_logits`; [] when they agree."""
    t, d = spec.teacher, spec.data
    out: list[str] = []
    loaded = t.source != "train"
    if loaded and t.path is None:
        out.append(f"teacher.path: required with teacher.source: {t.source} ({_PATH_IS[t.source]})")
    if not loaded:
        for name in ("path", "outputs"):
            if getattr(t, name) is not None:
                out.append(
                    f"teacher.{name}: only for a teacher made elsewhere (teacher.source: checkpoint or logits), "
                    f"got {getattr(t, name)!r} with teacher.source: train; remove it or set teacher.source"
                )
    if loaded and (spec.search.teacher.num_samples > 1 or spec.search.teacher.space):
        out.append(
            f"search.teacher: teacher.source: {t.source} loads a teacher instead of training one, so there is "
            "nothing to search; remove search.teacher"
        )
    if loaded and t.train_fraction != 1:
        out.append(
            f"teacher.train_fraction: only for a trained teacher (teacher.source: train), got {t.train_fraction:g}"
        )
    if t.outputs == "classes" and not d.clustered:
        out.append(
            "teacher.outputs: classes gives no subclass logits to distil; set data.subclasses: clustered with "
            "data.subclasses_per_class: K (subclasses found in the teacher's embeddings)"
        )
    if t.outputs == "subclasses" and d.clustered:
        out.append(
            "teacher.outputs: subclasses, but data.subclasses: clustered builds the subclass logits from a teacher "
            "of class logits; set teacher.outputs: classes (or leave it out)"
        )
    if t.cluster_tau is not None and not d.clustered:
        out.append(f"teacher.cluster_tau: only with data.subclasses: clustered, got {t.cluster_tau:g}")
    if spec.teacher_logits == "views" and (d.clustered or t.source == "logits"):
        why = "data.subclasses: clustered" if d.clustered else "teacher.source: logits"
        out.append(f"teacher_logits: views is not available with {why}; set teacher_logits: clean")
    return out
