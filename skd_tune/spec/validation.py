"""Reading and validating a spec: every mistake in one pass, each with its dotted path, what is wrong,
the bad value and (where there is a closed set) the valid choices, e.g.::

    student.temperature: must be > 0, got -1
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from ..names import MODELS, WIDTH_MODELS
from .models import SEARCHABLE, TEACHER_SEARCHABLE, Spec, StudentSpec, TeacherSpec
from .space import Distribution, merge, nest

__all__ = ["SpecError", "load_spec", "parse_spec", "validate_spec"]


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
        base = student_raw or {}
        if role == "student" and key == "width" and "model" in space:
            base = {**base, "model": WIDTH_MODELS[0]}  # which searched models take a width: _check_widths
        for value in dist.values_to_check():
            try:
                model.model_validate(merge(base, nest({key: value})))
            except ValidationError as e:
                # Only errors of this field: the other student fields are reported by the main pass.
                for err in e.errors():
                    if tuple(str(p) for p in err["loc"][: key.count(".") + 1]) == tuple(key.split(".")):
                        problems.append(
                            f"{where}.{key}: {dist.kind} value {value!r} is not a valid {role}.{key}: {_message(err)}"
                        )
    if role == "student":
        problems.extend(_check_widths(space, student_raw or {}))
    return problems


def _check_widths(space: dict, student_raw: dict) -> list[str]:
    """A searched `model` that takes no width (not in WIDTH_MODELS) while the width, fixed or searched,
    may be != 1: every model choice meets every width the search may give it."""
    if "model" not in space:
        return []
    try:
        models = Distribution.model_validate(space["model"]).values_to_check()
        if "width" in space:
            widths, where = Distribution.model_validate(space["width"]).values_to_check(), "search.space.width may be"
        else:
            widths, where = [student_raw.get("width", 1.0)], "student.width is"
    except ValidationError:
        return []  # already reported by the main validation
    wide = [w for w in widths if isinstance(w, (int, float)) and not isinstance(w, bool) and w != 1]
    if not wide:
        return []
    return [
        f"search.space.model: choice {m!r} takes no width, but {where} {wide[0]:g}; "
        f"the models that take a width: {', '.join(WIDTH_MODELS)}"
        for m in models
        if isinstance(m, str) and m in MODELS and m not in WIDTH_MODELS
    ]


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
        elif not loc:  # a check across sections (Spec's own validator): its message names the fields
            out.extend(_message(err).split("\n"))  # several problems, one a line
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
        if get_origin(model) in (tuple, list) and isinstance(part, int):  # tuple[Model, ...]: an item's index
            model = get_args(model)[0]
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
    "tuple_type": "must be a list",
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
