"""`state.json`: which stages of an experiment have started and which are done, as a typed model.

    {"spec_hash": "...", "started": {"student": "2026-11-30T10:00:00"},
     "stages": {"teacher": {"done_at": "...", "checkpoint": "...", ...}, ...}}

`started` marks a Tune stage whose Tuner (and so its `tuner.pkl`) exists; `stages` holds, per stage
done, what it recorded (`done_at` plus the stage's own fields). Written atomically; a primary file:
a damaged one is an error that names it, never silently replaced.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..atomic import write_text_atomic
from ..errors import NotAnExperiment, first_line

__all__ = ["State", "now", "read_state", "write_state"]


def now() -> str:
    """The local time as state.json records it."""
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


def read_state(path: Path) -> State:
    """The state at `path` (an empty one when the file does not exist yet)."""
    if not path.exists():
        return State()
    try:
        return State.model_validate_json(path.read_bytes())
    except (ValidationError, ValueError, OSError) as e:
        raise NotAnExperiment(
            f"{path}: not valid JSON ({first_line(e)}); the file was damaged. Delete it and run `skd-tune run` "
            "on the experiment again to re-run its stages (the finished Ray Tune experiments in the directory are "
            "resumed, not recomputed)"
        ) from None


def write_state(path: Path, state: State) -> None:
    write_text_atomic(path, state.model_dump_json(indent=2) + "\n")
