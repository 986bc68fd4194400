"""The pydantic models of the spec: strict (unknown keys are errors), frozen, every field bounded.

Validators raise `ValueError` with the message the user sees (validation.py adds the path and the
bad value). The names a field may take come from `names.py`, so nothing heavy is imported.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from .. import names
from ..names import COST_METRICS, INVENTED, METRICS, SAMPLERS, SCHEDULERS
from .base import Strict as _Strict
from .groupings import VOTES, Subclasses
from .objectives import Objective, check_objectives, fill_search_metric, parse_budget_text
from .space import Distribution, merge, nest
from .teacher_source import CLUSTERED, teacher_source_problems

__all__ = [
    "LOCATION_FIELDS",
    "SEARCHABLE",
    "TEACHER_SEARCHABLE",
    "CurriculumSpec",
    "DataSpec",
    "MethodsSpec",
    "Objective",
    "Resources",
    "SchedulerSpec",
    "SearchSpec",
    "Spec",
    "StudentSpec",
    "TeacherSearchSpec",
    "TeacherSpec",
    "spec_hash",
]


def _one_of(kind: str, value: str, names) -> str:
    """`value` if it names an entry of a registry, else the error that lists the entries."""
    if value not in names:
        raise ValueError(f"unknown {kind} {value!r}; available: {', '.join(names)}")
    return value


class Resources(_Strict):
    """What one trial asks Ray for: CPUs and GPUs (a fraction < 1 lets trials share a GPU)."""

    cpu: float = Field(1.0, gt=0, le=1024)
    gpu: float = Field(0.0, ge=0, le=64)

    @field_validator("gpu")
    @classmethod
    def _whole_or_fraction(cls, v: float) -> float:
        if v > 1 and v != int(v):
            raise ValueError(f"must be a fraction in [0, 1] or a whole number of GPUs, got {v}")
        return v


class DataSpec(_Strict):
    source: str = "digits"
    root: str | None = None
    subclasses: Subclasses = None  # a scheme (None: the source's default) or MHIST's vote groups: groupings.py
    cache_dir: str | None = None  # where decoded images are cached (default: <root>/.skd_cache)
    val_fraction: float = Field(0.15, gt=0, lt=0.5)
    test_fraction: float = Field(0.15, gt=0, lt=0.5)
    # The share of the training split the students train on (stratified by subclass, seeded): the low-data
    # regime, where distillation matters most. Validation and test stay whole; the teacher trains on the
    # whole training split unless teacher.train_fraction says otherwise.
    train_fraction: float = Field(1.0, gt=0, le=1)
    positive_class: str | None = None
    image_size: int | None = Field(None, ge=8, le=1024)
    # `subclasses: invented` (any source): the teacher invents K subclasses per class (Müller et al. 2020);
    # `clustered`: K per class found by k-means in the teacher's embeddings (teachers/clusters.py)
    subclasses_per_class: int | None = Field(None, ge=1, le=64)
    # Known subclasses split into more teacher outputs each (invented sub-subclasses), 1 = as labelled
    outputs_per_subclass: int = Field(1, ge=1, le=64)

    @field_validator("source")
    @classmethod
    def _known_source(cls, v: str) -> str:
        return _one_of("dataset source", v, sorted(names.SOURCES))

    @model_validator(mode="after")
    def _consistent(self) -> DataSpec:
        needs_root = names.SOURCES[self.source][0]
        if self.per_class:
            if self.subclasses_per_class is None:
                raise ValueError(
                    f"data.subclasses_per_class: required with data.subclasses: {self.subclasses} "
                    "(how many subclasses per class), e.g. subclasses_per_class: 4"
                )
            if self.outputs_per_subclass != 1:
                raise ValueError(
                    f"data.outputs_per_subclass: only for known subclasses; with data.subclasses: "
                    f"{self.subclasses}, set data.subclasses_per_class instead"
                )
        elif self.subclasses_per_class is not None:
            raise ValueError(
                f"data.subclasses_per_class: only with data.subclasses: invented or clustered (got subclasses: "
                f"{self.subclass_scheme!r}); to give each known subclass several outputs, set data.outputs_per_subclass"
            )
        if needs_root and self.root is None:
            raise ValueError(f"data.root is required for source {self.source!r}: the path of the dataset")
        return self

    @property
    def subclass_scheme(self) -> str:
        """`subclasses`, or the source's default scheme when not given, or "votes" for a grouping."""
        if self.subclasses is None or self.subclasses in (INVENTED, CLUSTERED):
            return names.SOURCES[self.source][1][0]
        return VOTES if isinstance(self.subclasses, tuple) else self.subclasses

    @property
    def vote_groups(self) -> dict[str, tuple[tuple[int, ...], ...]] | None:
        """The grouping of MHIST's SSA vote counts (class -> its groups, HP then SSA), or None."""
        return dict(self.subclasses) if isinstance(self.subclasses, tuple) else None

    @property
    def invented(self) -> bool:
        """True when the teacher invents the subclasses (the known ones are kept for diagnostics only)."""
        return self.subclasses == INVENTED

    @property
    def clustered(self) -> bool:
        """True when the subclasses are clusters of the teacher's embeddings, per class (teachers/clusters.py)."""
        return self.subclasses == CLUSTERED

    @property
    def per_class(self) -> bool:
        """True when the subclasses are not the known ones but K per class (invented or clustered)."""
        return self.invented or self.clustered

    @property
    def outputs_per_group(self) -> int:
        """Teacher/student outputs per group: per class when invented or clustered, per known subclass otherwise."""
        return self.subclasses_per_class if self.per_class else self.outputs_per_subclass


class CurriculumSpec(_Strict):
    """Curriculum by sample difficulty (see curriculum.py): pacing function, starting share, and the
    fraction of the epochs after which the whole training set is used. `levels` admits whole difficulty
    levels (annotator agreement; quartiles of the teacher's loss without annotations), one more per
    stage, and ignores `start`. full_at = 1 puts the whole set (for `levels`: the hardest level) after
    the last epoch, so no epoch trains on all of it."""

    pacing: str = "none"
    start: float = Field(0.5, gt=0, le=1)
    full_at: float = Field(0.5, gt=0, le=1)

    @field_validator("pacing")
    @classmethod
    def _known_pacing(cls, v: str) -> str:
        return _one_of("pacing", v, names.PACINGS)


class _TrainSpec(_Strict):
    """What teacher and student training share: the model, the optimiser, the data handling."""

    model: str = "cnn"
    pretrained: bool = False
    epochs: int = Field(20, ge=1, le=10_000)
    batch_size: int = Field(64, ge=1, le=65_536)
    lr: float = Field(1e-3, gt=0, le=10)
    weight_decay: float = Field(0.0, ge=0, le=1)
    augment: bool = False  # flips, 90-degree rotations, mild colour jitter (images), on the device
    curriculum: CurriculumSpec = Field(default_factory=CurriculumSpec)
    resources: Resources = Field(default_factory=lambda: Resources(cpu=1, gpu=0))

    @field_validator("model")
    @classmethod
    def _known_model(cls, v: str) -> str:
        return _one_of("model", v, sorted(names.MODELS))


class TeacherSpec(_TrainSpec):
    """The teacher's training: cross-entropy on the subclass labels (known subclasses), or on the class
    labels plus `beta` times the auxiliary loss of Müller et al. (2020) at temperature `t_aux` when it
    has several outputs per class or per subclass (data.subclasses: invented, data.outputs_per_subclass)."""

    beta: float = Field(1.0, ge=0, le=100)
    t_aux: float = Field(1.0, gt=0, le=100)
    train_fraction: float = Field(1.0, gt=0, le=1)  # the share of the training split the teacher trains on
    # Bring your own teacher (spec/teacher_source.py, teachers/): trained here, a checkpoint, or its logits
    source: Literal["train", "checkpoint", "logits"] = "train"
    path: str | None = None  # checkpoint: the file; logits: the directory (relative: from the current directory)
    outputs: Literal["classes", "subclasses"] | None = None  # what a loaded teacher outputs (None: from its width)
    cluster_tau: float | None = Field(None, gt=0, le=1e9)  # clustered: tau (None: mean within-cluster sq. distance)


class StudentSpec(_TrainSpec):
    """The student's training; the fields in SEARCHABLE can be searched under `search.space`."""

    model: str = "mlp"
    # A multiplier of the model's channels or hidden units (models.py); != 1 only for names.WIDTH_MODELS
    width: float = Field(1.0, gt=0, le=16)
    temperature: float = Field(4.0, gt=0, le=1000)
    w_ce: float = Field(1.0, ge=0, le=100)
    w_kd: float = Field(0.0, ge=0, le=100)
    w_skd: float = Field(1.0, ge=0, le=100)

    @field_validator("width")
    @classmethod
    def _model_takes_width(cls, v: float, info: ValidationInfo) -> float:
        model = info.data.get("model")  # absent when the model name itself was refused
        if v != 1 and model is not None and model not in names.WIDTH_MODELS:
            raise ValueError(
                f"model {model!r} takes no width (width must be 1, got {v:g}); "
                f"the models that take a width: {', '.join(names.WIDTH_MODELS)}"
            )
        if v != 1 and info.data.get("pretrained"):
            raise ValueError(f"pretrained weights exist only at width 1, got {v:g}; set pretrained: false or width: 1")
        return v


# Student fields a search may vary: the training, and the model and its width (size against F1, issue 16).
SEARCHABLE = (
    "temperature",
    "w_ce",
    "w_kd",
    "w_skd",
    "lr",
    "weight_decay",
    "batch_size",
    "curriculum.pacing",
    "curriculum.start",
    "curriculum.full_at",
    "model",
    "width",
)
# Teacher fields its own (small) search may vary, under `search.teacher.space`.
TEACHER_SEARCHABLE = ("beta", "t_aux", "lr", "weight_decay", "batch_size", "curriculum.pacing", "curriculum.start")


class SchedulerSpec(_Strict):
    name: str = "asha"
    grace_period: int = Field(3, ge=1)
    reduction_factor: float = Field(3.0, gt=1)

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        return _one_of("scheduler", v, SCHEDULERS)


class TeacherSearchSpec(_Strict):
    """An optional search over the teacher (e.g. the auxiliary loss's `beta` and `t_aux`); the best
    teacher by `search.metric` is the one distilled."""

    num_samples: int = Field(1, ge=1, le=10_000)
    space: dict[str, Distribution] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _space_for_several(self) -> TeacherSearchSpec:
        if self.num_samples > 1 and not self.space:
            raise ValueError(
                f"num_samples: {self.num_samples} teacher trials need a search.teacher.space to vary "
                f"(e.g. beta, t_aux, lr); with no space, set num_samples: 1"
            )
        return self


class SearchSpec(_Strict):
    metric: str = "val_f1"
    mode: Literal["max", "min"] = "max"
    # Several objectives (a validation metric first, then e.g. costs): a multi-objective student search whose
    # Pareto front lands in results/pareto.parquet; empty: `metric`/`mode` alone. Rules: spec/objectives.py.
    objectives: tuple[Objective, ...] = ()
    num_samples: int = Field(16, ge=1, le=100_000)
    max_concurrent: int = Field(2, ge=1, le=10_000)
    sampler: str = "tpe"
    scheduler: SchedulerSpec = Field(default_factory=SchedulerSpec)
    max_failures: int = Field(2, ge=0, le=100)  # retries of a trial whose worker died, from its last checkpoint
    # A trial checkpoints at its last epoch, at ASHA's rungs, and otherwise at most every
    # `checkpoint_interval_s` seconds (0: every epoch); an interrupted trial reruns at most that. It reports
    # its epochs to the search with each checkpoint and otherwise at most every `report_interval_s` (0: every
    # epoch), each report carrying every epoch since the last (skd_tune/reporting.py).
    checkpoint_interval_s: float = Field(10.0, ge=0, le=86_400)
    report_interval_s: float = Field(1.0, ge=0, le=3_600)
    space: dict[str, Distribution] = Field(default_factory=dict)
    teacher: TeacherSearchSpec = Field(default_factory=TeacherSearchSpec)

    def decision_epochs(self, max_epochs: int) -> frozenset[int]:
        """The epochs at which the student scheduler may stop a trial: ASHA's rungs, grace_period * rf**k
        (Ray's `_Bracket` decides at the first report with its `epoch` >= a rung), below max_epochs."""
        if self.scheduler.name != "asha":
            return frozenset()
        out, t = set(), float(min(self.scheduler.grace_period, max_epochs))
        while t < max_epochs:
            out.add(math.ceil(t - 1e-9))
            t *= self.scheduler.reduction_factor
        return frozenset(out)

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, v: str) -> str:
        if v not in METRICS:
            raise ValueError(f"unknown metric {v!r}; the student trials report: {', '.join(METRICS)}")
        return v

    @field_validator("sampler")
    @classmethod
    def _known_sampler(cls, v: str) -> str:
        return _one_of("sampler", v, SAMPLERS)

    @model_validator(mode="before")
    @classmethod
    def _metric_from_objectives(cls, data: Any) -> Any:
        return fill_search_metric(data)

    @model_validator(mode="after")
    def _objectives_agree(self) -> SearchSpec:
        check_objectives(self.objectives, self.metric, self.mode, self.sampler)
        return self


class MethodsSpec(_Strict):
    """The method table: `seeds` paired runs per method (0: no table). `search: per_method` gives KD and
    no-KD a search of their own with the student search's budget (methods.method_spaces); `shared`
    retrains the configuration the search found for SKD as all three. `point`: the SKD trial the table
    compares, the best one within a cost budget (e.g. "params<=20000"; default: the best trial); with
    it, or with `search.objectives`, KD and no-KD hold that trial's `model` and `width` fixed."""

    seeds: int = Field(3, ge=0, le=100)
    search: Literal["per_method", "shared"] = "per_method"
    point: str | None = None

    @field_validator("point")
    @classmethod
    def _a_cost_budget(cls, v: str | None) -> str | None:
        if v is None:
            return v
        column, _, _ = parse_budget_text(v)
        if column not in COST_METRICS:
            raise ValueError(f"budget on {column!r}: the point is chosen by a cost; costs: {', '.join(COST_METRICS)}")
        return v


class Spec(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=100)
    storage: str = "runs"
    seed: int = Field(0, ge=0, le=2**31 - 1)
    data: DataSpec = Field(default_factory=DataSpec)
    teacher: TeacherSpec = Field(default_factory=TeacherSpec)
    student: StudentSpec = Field(default_factory=StudentSpec)
    search: SearchSpec = Field(default_factory=SearchSpec)
    methods: MethodsSpec = Field(default_factory=MethodsSpec)
    # The teacher logits the students distil, computed once: `clean`, of each training image as it is;
    # `views`, of all 8 views of each (flips and 90-degree turns, augment.py), so that a student's
    # augmented batch distils the logits of the very view each image was given (colour jitter stays
    # undistilled: the logits are those of the un-jittered view).
    teacher_logits: Literal["clean", "views"] = "clean"

    @model_validator(mode="after")
    def _teacher_source_agrees(self) -> Spec:
        problems = teacher_source_problems(self)
        if problems:
            raise ValueError("\n".join(problems))  # one problem a line: validation.py counts each
        return self

    @model_validator(mode="after")
    def _views_need_augmentation(self) -> Spec:
        if self.teacher_logits == "views" and not self.student.augment:
            raise ValueError(
                "teacher_logits: views caches the teacher's logits of every flip and turn of a training image for "
                "a student that sees them, but student.augment is false (the student sees only the image itself); "
                "set student.augment: true, or teacher_logits: clean"
            )
        return self

    def student_for(self, params: dict[str, Any]) -> StudentSpec:
        """The student spec of one trial: the base `student` with the searched `params` applied."""
        return StudentSpec.model_validate(merge(self.student.model_dump(), nest(params)))

    def teacher_for(self, params: dict[str, Any]) -> TeacherSpec:
        """The teacher spec of one teacher trial: the base `teacher` with `search.teacher.space` params applied."""
        return TeacherSpec.model_validate(merge(self.teacher.model_dump(), nest(params)))


# Where an experiment lives is not part of what it computes: a moved or renamed directory resumes.
LOCATION_FIELDS = {"name", "storage"}


def spec_hash(spec: Spec) -> str:
    """Stable short hash of what a spec computes (its canonical JSON without `name` and `storage`)."""
    canonical = json.dumps(spec.model_dump(mode="json", exclude=LOCATION_FIELDS), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]
