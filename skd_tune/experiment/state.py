"""The experiment's state file (`layout.STATE`): which stages of an experiment have started and which are done, as a typed model.

    {"spec_hash": "...", "started": {"student": "2026-11-30T10:00:00"},
     "stages": {"teacher": {"done_at": "...", "checkpoint": "...", ...}, ...}}

`started` marks a Tune stage whose Tuner (and so its `tuner.pkl`) exists; `stages` holds, per stage
done, what it recorded (`done_at` plus the stage's own fields). Written atomically; a primary file:
a damaged one is an error that names it, never silently replaced.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..atomic import write_text_atomic
from ..errors import NotAnExperiment, first_line
from ..spec import SpecError

__all__ = ["State", "now", "read_primary", "read_state", "write_state"]


def now() -> str:
    """The local time as the state records it."""
    return time.strftime("%Y-%m-%dT%H:%M:%S")


class State(BaseModel):
    model_config = ConfigDict(extra="ignore")

    spec_hash: str | None = None
    started: dict[str, str] = Field(default_factory=dict)
    stages: dict[str, dict[str, Any]] = Field(default_factory=dict)

    def done(self, stage: str) -> dict[str, Any] | None:
        """What `stage` recorded when it finished, or None if it has not."""
        return self.stages.get(stage)

    def with_done(self, stage: str, info: dict[str, Any]) -> State:
        return self.model_copy(update={"stages": {**self.stages, stage: {"done_at": now(), **info}}})

    def with_started(self, stage: str) -> State:
        return self.model_copy(update={"started": {**self.started, stage: now()}})


T = TypeVar("T")


def read_primary(path: Path, parse: Callable[[Path], T], problem: str, fix: str) -> T:
    """`parse(path)` of a primary file (never rebuilt behind the user's back): a damaged one is a
    `NotAnExperiment` naming the file, the `problem` with its cause, and the `fix`."""
    try:
        return parse(path)
    except (ValidationError, ValueError, OSError, SpecError) as e:
        raise NotAnExperiment(f"{path}: {problem} ({first_line(e)}); {fix}") from None


def read_state(path: Path) -> State:
    """The state at `path` (an empty one when the file does not exist yet)."""
    if not path.exists():
        return State()
    return read_primary(
        path,
        lambda p: State.model_validate_json(p.read_bytes()),
        "not valid JSON",
        "the file was damaged. Delete it and run `skd-tune run` on the experiment again to re-run its stages (the "
        "finished Ray Tune experiments in the directory are resumed, not recomputed)",
    )


def write_state(path: Path, state: State) -> None:
    write_text_atomic(path, state.model_dump_json(indent=2) + "\n")
