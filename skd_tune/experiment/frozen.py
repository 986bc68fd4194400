"""The frozen spec of an experiment: written when it starts, compared on every resume, read by the
readers, and the way from what a user typed (a YAML file, an experiment directory, a URI) to a spec.

The frozen spec is read strictly (the same validation as a new spec); that read does not touch the
file system, so an experiment made elsewhere (whose `data.root` is relative to another working
directory, or on another machine) is read by `status`, `report` and `export` all the same.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from ..atomic import write_text_atomic
from ..errors import PipelineError
from ..spec import LOCATION_FIELDS, Spec, SpecError, load_spec, parse_spec, spec_hash
from . import layout
from .experiment import Experiment
from .state import State, read_primary
from .storage import is_uri, join

__all__ = ["frozen_spec", "location_of", "prepare", "resolve_spec"]


def location_of(spec: Spec) -> str:
    """`<storage>/<name>`: a local path, or a URI when `storage` is one (s3://bucket/prefix, ...)."""
    return join(spec.storage, spec.name) if is_uri(spec.storage) else str(Path(spec.storage) / spec.name)


def resolve_spec(arg: str | os.PathLike) -> Spec:
    """The spec of what `skd-tune run ARG` names: a YAML file, or an experiment (a directory or a URI)
    whose frozen spec is pointed at where the experiment lies now (so a moved experiment resumes there)."""
    if is_uri(arg):
        exp = Experiment.open(str(arg))
        if not exp.path(layout.SPEC).exists():
            raise SpecError(
                str(arg),
                ["no spec.yaml there: not an skd-tune experiment"],
                f"Give the URI of an experiment directory (it holds {layout.SPEC} and {layout.STATE}), or a local YAML spec.",
            )
        spec = load_spec(exp.path(layout.SPEC))
        base, _, query = str(arg).partition("?")
        parent, _, name = base.rstrip("/").rpartition("/")
        return spec.model_copy(update={"name": name, "storage": parent + (f"?{query}" if query else "")})
    path = Path(arg)
    if path.is_dir():
        if not (path / layout.SPEC).exists():
            raise SpecError(
                str(path),
                ["a directory without spec.yaml: not an skd-tune experiment"],
                f"Give a YAML spec, or the directory of an experiment (it holds {layout.SPEC} and {layout.STATE}).",
            )
        root = path.resolve()
        spec = load_spec(root / layout.SPEC)
        return spec.model_copy(update={"name": root.name, "storage": str(root.parent)})
    return load_spec(path)


def frozen_spec(exp: Experiment) -> Spec:
    """The experiment's frozen spec; a damaged or hand-edited one is a `NotAnExperiment` naming the file."""
    return read_primary(
        exp.path(layout.SPEC),
        lambda p: parse_spec(p.read_text(), source=str(p)),
        "not a valid skd-tune spec",
        "`skd-tune run` writes this frozen copy of the spec when an experiment starts; it was damaged or edited. "
        "Restore it from the spec the experiment was run with (e.g. search_spaces/NAME.yaml) and run the command again",
    )


def prepare(exp: Experiment, spec: Spec) -> bool:
    """Create the experiment with a frozen copy of the spec, or check that it matches. True if resuming.

    A matching experiment is not written to: running a finished experiment again changes no file."""
    frozen = spec.model_dump(mode="json")
    digest = spec_hash(spec)
    spec_file = exp.path(layout.SPEC)
    if spec_file.exists():
        state = exp.state()
        old = yaml.safe_load(spec_file.read_text()) or {}
        old_hash = state.spec_hash
        try:  # re-validated, so fields added to skd-tune since (with their defaults) do not count as a change
            old = Spec.model_validate(old).model_dump(mode="json")
            old_hash = spec_hash(Spec.model_validate(old))
        except ValueError:
            pass  # a frozen spec this version cannot read: compare the stored hash, report the raw diff
        if old_hash == digest:
            return True
        nothing_computed = not state.stages and not any(exp.has_tune_experiment(s) for s in ("teacher", "student"))
        if not nothing_computed:
            diffs = _diff(
                {k: v for k, v in old.items() if k not in LOCATION_FIELDS},
                {k: v for k, v in frozen.items() if k not in LOCATION_FIELDS},
            )
            raise PipelineError(
                f"{exp.root} was started from a different spec; fields that differ: {'; '.join(diffs) or '(unknown)'}. "
                f"Either restore the old spec (a copy is in {spec_file}) to resume this experiment, or give "
                "the spec a new `name:` to start a new experiment"
            )
    elif exp.root.is_dir() and any(p.name not in (layout.LOCK,) for p in exp.root.iterdir()):
        raise PipelineError(
            f"{exp.root} exists and is not an skd-tune experiment (it has no spec.yaml); nothing was written to it. "
            "Give the spec another `name:` or `storage:`, or empty that directory"
        )
    elif exp.root.exists() and not exp.root.is_dir():
        raise PipelineError(
            f"{exp.root} is a file, not an experiment directory; give the spec another `name:` or `storage:`"
        )
    exp.root.mkdir(parents=True, exist_ok=True)
    write_text_atomic(spec_file, yaml.safe_dump(frozen, sort_keys=False))
    exp.sync(layout.SPEC)
    exp.write_state(State(spec_hash=digest))
    return False


def _diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new)):
            out += _diff(old.get(k), new.get(k), f"{prefix}{k}.")
        return out
    return [] if old == new else [f"{prefix.rstrip('.')}: {old!r} -> {new!r}"]
