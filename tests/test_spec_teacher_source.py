"""`teacher.source`, `teacher.path`, `teacher.outputs`, `teacher.cluster_tau` and `data.subclasses:
clustered` in the spec: what is accepted, and every disagreement named in one pass (spec/teacher_source.py)."""

from __future__ import annotations

import pytest

from skd_tune.spec import SpecError, validate_spec

from .conftest import TINY_SPEC, deep_update

CLUSTERED = {"subclasses": "clustered", "subclasses_per_class": 5}


def _spec(changes: dict):
    return validate_spec(deep_update(TINY_SPEC, changes), source="s.yaml")


def test_loaded_teachers_and_clustered_subclasses_validate():
    spec = _spec({"data": CLUSTERED, "teacher": {"source": "checkpoint", "path": "t.pt", "outputs": "classes"}})
    assert spec.data.clustered and spec.data.per_class and not spec.data.invented
    assert spec.data.outputs_per_group == 5 and spec.data.subclass_scheme == "known"
    assert _spec({"teacher": {"source": "logits", "path": "dir"}}).teacher.outputs is None
    assert _spec({}).teacher.source == "train" and _spec({"data": CLUSTERED}).teacher.cluster_tau is None


@pytest.mark.parametrize(
    "changes, pattern",
    [
        ({"teacher": {"source": "pretrained"}}, r"teacher\.source: must be one of 'train', 'checkpoint' or 'logits', got 'pretrained'"),
        ({"teacher": {"outputs": "logits"}}, r"teacher\.outputs: must be one of 'classes' or 'subclasses', got 'logits'"),
        ({"teacher": {"source": "checkpoint"}}, r"teacher\.path: required with teacher\.source: checkpoint \(a TorchScript"),
        ({"teacher": {"path": "t.pt"}}, r"teacher\.path: only for a teacher made elsewhere .* got 't\.pt'"),
        ({"teacher": {"source": "logits", "path": "d", "outputs": "classes"}}, r"teacher\.outputs: classes gives no subclass logits"),
        ({"data": CLUSTERED, "teacher": {"source": "logits", "path": "d", "outputs": "subclasses"}}, r"teacher\.outputs: subclasses, but .* set teacher\.outputs: classes"),
        ({"teacher": {"cluster_tau": 2}}, r"teacher\.cluster_tau: only with data\.subclasses: clustered, got 2"),
        ({"data": {"subclasses": "clustered"}}, r"data: data\.subclasses_per_class: required with data\.subclasses: clustered"),
        ({"data": {"subclasses": "clusters"}}, r"data\.subclasses: 'clusters' is not a subclass scheme .* available: known, invented, clustered"),
        ({"data": CLUSTERED, "teacher_logits": "views", "student": {"augment": True}}, r"teacher_logits: views is not available with data\.subclasses: clustered"),
    ],
)  # fmt: skip
def test_bad_teacher_source(changes, pattern):
    with pytest.raises(SpecError, match=r"s\.yaml: 1 problem in the spec: " + pattern):
        _spec(changes)


def test_every_teacher_source_mistake_in_one_pass():
    changes = {
        "teacher": {"source": "checkpoint", "train_fraction": 0.5, "cluster_tau": 1.0},
        "search": {"teacher": {"num_samples": 2, "space": {"beta": {"uniform": [0.5, 2]}}}},
    }
    with pytest.raises(SpecError, match=r"s\.yaml: 4 problems in the spec: teacher\.path: required") as info:
        _spec(changes)
    for field in (
        "search.teacher: teacher.source: checkpoint loads",
        "teacher.train_fraction:",
        "teacher.cluster_tau:",
    ):
        assert field in str(info.value)
