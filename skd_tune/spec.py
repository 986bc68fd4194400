"""The experiment spec: pydantic models of the YAML, loaded and validated once at the edge.

Every mistake in a spec is reported in one pass, each with its dotted path, what is wrong, the bad
value and (where there is a closed set) the valid choices, e.g.::

    student.temperature: must be > 0, got -1

`load_spec(path)` reads a YAML file and `parse_spec(text)` / `validate_spec(raw)` validate it; each
returns a `Spec` or raises `SpecError`, whose `str()` is the one-paragraph message the CLI prints
before exiting with code 2. Pure: no downloads, no experiment lookup (experiment/ resolves a directory
or a URI to its frozen spec), no check of the file system (whether `data.root` exists is the data
loader's question), and nothing heavy imported: the names a spec may use come from `names.py`.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import math
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from . import names
from .names import INVENTED, METRICS, SAMPLERS, SCHEDULERS

__all__ = [
    "INVENTED",
    "SEARCHABLE",
    "TEACHER_SEARCHABLE",
    "CurriculumSpec",
    "SAMPLERS",
    "SCHEDULERS",
    "DataSpec",
    "Distribution",
    "MethodsSpec",
    "Resources",
    "SchedulerSpec",
    "SearchSpec",
    "Spec",
    "SpecError",
    "StudentSpec",
    "TeacherSearchSpec",
    "TeacherSpec",
    "load_spec",
    "nest",
    "parse_spec",
    "spec_hash",
    "validate_spec",
]


class SpecError(Exception):
    """A spec that cannot be used; `str()` is a one-paragraph message naming file, fields and fix."""

    def __init__(self, source: str, problems: list[str], fix: str = ""):
        self.source = source
        self.problems = problems
        self.fix = fix
        super().__init__(self._message())

    def _message(self) -> str:
        n = len(self.problems)
        head = f"{self.source}: {n} problem{'s' if n != 1 else ''} in the spec: "
        body = "; ".join(self.problems)
        fix = self.fix or "Fix the field(s) named above and run the command again."
        return f"{head}{body}. {fix}"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


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
    subclasses: str | None = None  # how subclasses are defined; None: the source's default (see SOURCES)
    cache_dir: str | None = None  # where decoded images are cached (default: <root>/.skd_cache)
    val_fraction: float = Field(0.15, gt=0, lt=0.5)
    test_fraction: float = Field(0.15, gt=0, lt=0.5)
    positive_class: str | None = None
    image_size: int | None = Field(None, ge=8, le=1024)
    # `subclasses: invented` (any source): the teacher invents K subclasses per class (Müller et al. 2020)
    subclasses_per_class: int | None = Field(None, ge=1, le=64)
    # Known subclasses split into more teacher outputs each (invented sub-subclasses), 1 = as labelled
    outputs_per_subclass: int = Field(1, ge=1, le=64)

    @field_validator("source")
    @classmethod
    def _known_source(cls, v: str) -> str:
        return _one_of("dataset source", v, sorted(names.SOURCES))

    @model_validator(mode="after")
    def _consistent(self) -> DataSpec:
        needs_root, schemes = names.SOURCES[self.source]
        if self.subclasses is not None and self.subclasses not in (*schemes, INVENTED):
            raise ValueError(
                f"data.subclasses: {self.subclasses!r} is not a subclass scheme of source {self.source!r}; "
                f"available: {', '.join((*schemes, INVENTED))}"
            )
        if self.invented:
            if self.subclasses_per_class is None:
                raise ValueError(
                    "data.subclasses_per_class: required with data.subclasses: invented "
                    "(how many subclasses the teacher invents per class), e.g. subclasses_per_class: 4"
                )
            if self.outputs_per_subclass != 1:
                raise ValueError(
                    "data.outputs_per_subclass: only for known subclasses; with data.subclasses: "
                    "invented, set data.subclasses_per_class instead"
                )
        elif self.subclasses_per_class is not None:
            raise ValueError(
                f"data.subclasses_per_class: only with data.subclasses: invented (got subclasses: "
                f"{self.subclass_scheme!r}); to give each known subclass several outputs, set data.outputs_per_subclass"
            )
        if needs_root and self.root is None:
            raise ValueError(f"data.root is required for source {self.source!r}: the path of the dataset")
        return self

    @property
    def subclass_scheme(self) -> str:
        """`subclasses`, or the source's default scheme when not given."""
        if self.subclasses is None or self.subclasses == INVENTED:
            return names.SOURCES[self.source][1][0]
        return self.subclasses

    @property
    def invented(self) -> bool:
        """True when the teacher invents the subclasses (the known ones are kept for diagnostics only)."""
        return self.subclasses == INVENTED

    @property
    def outputs_per_group(self) -> int:
        """Teacher/student outputs per group: per class when invented, per known subclass otherwise."""
        return self.subclasses_per_class if self.invented else self.outputs_per_subclass


class CurriculumSpec(_Strict):
    """Curriculum by sample difficulty (see curriculum.py): pacing function, starting share, and the
    fraction of the epochs after which the whole training set is used."""

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


class StudentSpec(_TrainSpec):
    """The student's training; the fields in SEARCHABLE can be searched under `search.space`."""

    model: str = "mlp"
    temperature: float = Field(4.0, gt=0, le=1000)
    w_ce: float = Field(1.0, ge=0, le=100)
    w_kd: float = Field(0.0, ge=0, le=100)
    w_skd: float = Field(1.0, ge=0, le=100)


# Student fields a search may vary (everything numeric that does not change the model's shape).
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
)
# Teacher fields its own (small) search may vary, under `search.teacher.space`.
TEACHER_SEARCHABLE = ("beta", "t_aux", "lr", "weight_decay", "batch_size", "curriculum.pacing", "curriculum.start")


def nest(params: dict[str, Any]) -> dict[str, Any]:
    """{"curriculum.start": 0.3, "lr": 0.1} -> {"curriculum": {"start": 0.3}, "lr": 0.1}."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        *parents, leaf = key.split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def _merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in changes.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


class Distribution(_Strict):
    """One search-space entry: exactly one of `uniform`, `loguniform`, `int` (inclusive), `choice`."""

    uniform: tuple[float, float] | None = None
    loguniform: tuple[float, float] | None = None
    int: tuple[builtins.int, builtins.int] | None = None  # (the field name shadows the builtin here)
    choice: list[Any] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Distribution:
        given = [k for k in ("uniform", "loguniform", "int", "choice") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of uniform: [low, high], loguniform: [low, high], int: [low, high], "
                f"choice: [a, b, ...]; got {given or 'none'}"
            )
        kind = given[0]
        if kind == "choice":
            if not self.choice:
                raise ValueError("choice: must list at least one value, got []")
            return self
        low, high = getattr(self, kind)
        if not (math.isfinite(low) and math.isfinite(high)):
            raise ValueError(f"{kind}: bounds must be finite, got [{low}, {high}]")
        if low > high:
            raise ValueError(f"{kind}: low must be <= high, got [{low}, {high}]")
        if kind == "loguniform" and low <= 0:
            raise ValueError(f"loguniform: low must be > 0, got {low}")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in ("uniform", "loguniform", "int", "choice") if getattr(self, k) is not None)

    def values_to_check(self) -> list[Any]:
        """Values whose validity as the target field stands for the whole range (bounds or choices)."""
        return list(self.choice) if self.kind == "choice" else list(getattr(self, self.kind))

    def to_optuna(self):
        """This entry as an Optuna distribution: the one translation of the search space, used by the
        search (`OptunaSearch(space=...)`) and by the report's importances. Optuna is imported here."""
        import optuna.distributions as od

        kind = self.kind
        if kind == "choice":
            return od.CategoricalDistribution(list(self.choice))
        if kind == "int":
            return od.IntDistribution(self.int[0], self.int[1])  # inclusive, like the spec
        low, high = getattr(self, kind)
        return od.FloatDistribution(float(low), float(high), log=kind == "loguniform")


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
    num_samples: int = Field(16, ge=1, le=100_000)
    max_concurrent: int = Field(2, ge=1, le=10_000)
    sampler: str = "tpe"
    scheduler: SchedulerSpec = Field(default_factory=SchedulerSpec)
    max_failures: int = Field(2, ge=0, le=100)  # retries of a trial whose worker died, from its last checkpoint
    # A trial checkpoints at its last epoch, at ASHA's rungs when its best epoch changed, and otherwise at
    # most every `checkpoint_interval_s` seconds (0: every epoch); an interrupted trial reruns at most that.
    checkpoint_interval_s: float = Field(10.0, ge=0, le=86_400)
    space: dict[str, Distribution] = Field(default_factory=dict)
    teacher: TeacherSearchSpec = Field(default_factory=TeacherSearchSpec)

    def decision_epochs(self, max_epochs: int) -> frozenset[int]:
        """The epochs at which the student scheduler may stop a trial: ASHA's rungs, grace_period * rf**k
        (Ray's `_Bracket` decides at the first report with training_iteration >= a rung), below max_epochs."""
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


class MethodsSpec(_Strict):
    seeds: int = Field(3, ge=0, le=100)


class Spec(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=100)
    storage: str = "runs"
    seed: int = Field(0, ge=0, le=2**31 - 1)
    data: DataSpec = Field(default_factory=DataSpec)
    teacher: TeacherSpec = Field(default_factory=TeacherSpec)
    student: StudentSpec = Field(default_factory=StudentSpec)
    search: SearchSpec = Field(default_factory=SearchSpec)
    methods: MethodsSpec = Field(default_factory=MethodsSpec)

    def student_for(self, params: dict[str, Any]) -> StudentSpec:
        """The student spec of one trial: the base `student` with the searched `params` applied."""
        return StudentSpec.model_validate(_merge(self.student.model_dump(), nest(params)))

    def teacher_for(self, params: dict[str, Any]) -> TeacherSpec:
        """The teacher spec of one teacher trial: the base `teacher` with `search.teacher.space` params applied."""
        return TeacherSpec.model_validate(_merge(self.teacher.model_dump(), nest(params)))


# Where an experiment lives is not part of what it computes: a moved or renamed directory resumes.
LOCATION_FIELDS = {"name", "storage"}


def spec_hash(spec: Spec) -> str:
    """Stable short hash of what a spec computes (its canonical JSON without `name` and `storage`)."""
    canonical = json.dumps(spec.model_dump(mode="json", exclude=LOCATION_FIELDS), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------------------------------
# Loading and error formatting


def load_spec(path: str | Path) -> Spec:
    """Read the YAML spec file at `path` and validate it; raise `SpecError` listing every problem."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise SpecError(
            str(path), ["file not found"], "Give the path of an existing YAML spec, e.g. search_spaces/digits.yaml."
        ) from None
    except IsADirectoryError:
        raise SpecError(
            str(path),
            ["a directory, not a YAML file"],
            "Give a YAML spec, or the directory of an experiment (the one `skd-tune run` created as STORAGE/NAME).",
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        reason = getattr(e, "strerror", None) or str(e)
        raise SpecError(
            str(path), [f"cannot read the file ({reason})"], "Check the path and its permissions."
        ) from None
    return parse_spec(text, source=str(path))


def parse_spec(text: str, source: str = "<spec>") -> Spec:
    """Parse YAML text and validate it (`validate_spec`); an empty text is its own clear error."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        where = ""
        mark = getattr(e, "problem_mark", None)
        if mark is not None:
            where = f"line {mark.line + 1}, column {mark.column + 1}: "
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise SpecError(
            source,
            [f"{where}YAML syntax error: {problem}"],
            "Fix the YAML syntax at that line (indentation, a missing ':' or an unclosed bracket).",
        ) from None
    if raw is None:
        raise SpecError(
            source,
            ["the spec file is empty"],
            "Write the spec into it (at least `name: NAME`); search_spaces/digits.yaml is a complete example.",
        )
    return validate_spec(raw, source=source)


def validate_spec(raw: Any, source: str = "<spec>") -> Spec:
    if not isinstance(raw, dict):
        raise SpecError(
            source, [f"the top level must be a mapping of keys (name, data, teacher, ...), got {type(raw).__name__}"]
        )
    problems: list[str] = []
    spec = None
    try:
        spec = Spec.model_validate(raw)
    except ValidationError as e:
        problems.extend(_format_errors(e, Spec))
    # Search-space keys are checked against the student fields even when other parts failed.
    search = raw.get("search") if isinstance(raw.get("search"), dict) else {}
    space = search.get("space")
    if isinstance(space, dict):
        problems.extend(_check_space(space, raw.get("student") if isinstance(raw.get("student"), dict) else {}))
    teacher_space = search.get("teacher", {}).get("space") if isinstance(search.get("teacher"), dict) else None
    if isinstance(teacher_space, dict):
        problems.extend(
            _check_space(
                teacher_space, raw.get("teacher") if isinstance(raw.get("teacher"), dict) else {}, role="teacher"
            )
        )
    if problems or spec is None:
        raise SpecError(source, _dedupe(problems))
    return spec


def _check_space(space: dict, student_raw: dict, role: str = "student") -> list[str]:
    problems = []
    where = "search.space" if role == "student" else "search.teacher.space"
    searchable = SEARCHABLE if role == "student" else TEACHER_SEARCHABLE
    model = StudentSpec if role == "student" else TeacherSpec
    for key, entry in space.items():
        if key not in searchable:
            problems.append(
                f"{where}.{key}: not a parameter the {role} trainable knows; searchable: {', '.join(searchable)}"
            )
            continue
        try:
            dist = Distribution.model_validate(entry)
        except ValidationError:
            continue  # already reported by the main validation
        for value in dist.values_to_check():
            try:
                model.model_validate(_merge(student_raw or {}, nest({key: value})))
            except ValidationError as e:
                # Only errors of this field: the other student fields are reported by the main pass.
                for err in e.errors():
                    if tuple(str(p) for p in err["loc"][: key.count(".") + 1]) == tuple(key.split(".")):
                        problems.append(
                            f"{where}.{key}: {dist.kind} value {value!r} is not a valid {role}.{key}: {_message(err)}"
                        )
    return problems


def _dedupe(items: list[str]) -> list[str]:
    seen: dict[str, None] = {}
    for item in items:
        seen.setdefault(item, None)
    return list(seen)


def _format_errors(e: ValidationError, root: type[BaseModel]) -> list[str]:
    out = []
    for err in e.errors():
        loc = [str(p) for p in err["loc"]]
        path = ".".join(loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            valid = _fields_at(root, err["loc"][:-1])
            hint = f"; valid keys here: {', '.join(valid)}" if valid else ""
            out.append(f"{path}: unknown key{hint}")
        else:
            out.append(f"{path}: {_message(err)}")
    return out


def _fields_at(root: type[BaseModel], loc: tuple) -> list[str]:
    """The keys valid at `loc` (a pydantic error location) below the model `root`; [] if not a model."""
    model: Any = root
    for part in loc:
        if get_origin(model) is dict:  # dict[str, Model]: the key is free, descend into the value type
            model = get_args(model)[1]
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or part not in model.model_fields:
            return []
        model = model.model_fields[part].annotation
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    return []


_TEMPLATES = {
    "greater_than": "must be > {gt}",
    "greater_than_equal": "must be >= {ge}",
    "less_than": "must be < {lt}",
    "less_than_equal": "must be <= {le}",
    "literal_error": "must be one of {expected}",
    "missing": "required, missing",
    "string_pattern_mismatch": "must match {pattern} (letters, digits, '.', '_', '-')",
}


def _message(err: dict) -> str:
    template = _TEMPLATES.get(err["type"])
    if template is not None:
        ctx = {k: (f"{v:g}" if isinstance(v, float) else v) for k, v in err.get("ctx", {}).items()}
        msg = template.format(**ctx)
    else:
        msg = err["msg"]
        for prefix in ("Value error, ", "Assertion failed, "):
            msg = msg.removeprefix(prefix)
        msg = msg.replace("Input should be", "must be")
    if (
        err["type"] != "missing"
        and "input" in err
        and not isinstance(err["input"], dict)
        and ", got " not in msg
        and not (isinstance(err["input"], str) and repr(err["input"]) in msg)
    ):
        msg += f", got {err['input']!r}"
    return msg
