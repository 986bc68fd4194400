"""The `Stage` interface and the `Context` every stage runs in.

A stage has a `name` (its key in the experiment's state), says whether it applies to a spec, whether
it needs Ray, and whether what it recorded is still intact; `run(ctx)` does the work and returns what
the experiment records for it (`Experiment.mark_done`); `show(ctx, record)` prints its summary, both
after a run and when a finished stage is skipped. Stage modules import their heavy dependencies
(torch, the Ray layer) inside `run`, so the stage list itself is light to import.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..experiment import Experiment
from ..spec import Spec

if TYPE_CHECKING:
    import numpy as np

    from ..data import Dataset
    from ..tune import Interruption

__all__ = ["Context", "Stage", "plain"]


@dataclass
class Context:
    """What the stages of one run share: the spec, the experiment, the data, where lines go, how to
    resume, the run's signal handling, and `need_ray()`, which starts or joins Ray on first call."""

    spec: Spec
    exp: Experiment
    data: Dataset
    say: Callable[[str], None]
    resume_cmd: str
    need_ray: Callable[[], None]
    local: bool
    interruption: Interruption | None = None
    cache: dict[str, Any] = field(default_factory=dict)

    def teacher_logits(self) -> dict[str, np.ndarray]:
        """The cached teacher logits of every split (loaded once per run)."""
        if "logits" not in self.cache:
            self.cache["logits"] = self.exp.load_teacher_logits()
        return self.cache["logits"]

    def student_stage(self, name: str, trainable: Any, total: int, param_names: list[str], extra: dict, **kw: Any):
        """A Tune stage of students (a search, the method table): `trainable(config, spec, data,
        teacher_logits, **extra)` with the student's resources and epochs; `kw`: the rest of `TuneStage`."""
        from ..tune import TuneStage

        parameters = {"spec": self.spec, "data": self.data, "teacher_logits": self.teacher_logits()["train"], **extra}
        s = self.spec.student
        return TuneStage(name, trainable, parameters, s.resources, total, s.epochs, param_names, **kw)

    def compared_point(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The SKD trial the method table compares (the best within `methods.point`, or the best trial) and
        the architecture (model, width) KD and no-KD hold fixed with it: {} unless the spec trades quality
        against cost (`search.objectives` or `methods.point`)."""
        from ..errors import PipelineError
        from ..experiment.selection import architecture_of, compared_point

        if "point" in self.cache:  # read once per run: the student search is finished before any caller
            return self.cache["point"]
        spec = self.spec
        trial = compared_point(self.exp.trials("student"), spec.methods.point, spec.search.metric, spec.search.mode)
        if trial is None:
            raise PipelineError(
                f"no finished trial in the student search to compare the methods at; see {self.exp.results_dir}"
            )
        trades = bool(spec.search.objectives) or spec.methods.point is not None
        self.cache["point"] = (trial, architecture_of(trial, spec.search.space) if trades else {})
        return self.cache["point"]

    def tune_args(self) -> dict[str, Any]:
        """The keyword arguments of `tune.run_tune_stage` that come from the run."""
        return {"printer": self.say, "interruption": self.interruption, "resume_cmd": self.resume_cmd}


def plain(value: Any) -> Any:
    """A numpy scalar as the Python value (for the experiment state and the tables)."""
    return value.item() if hasattr(value, "item") else value


class Stage:
    """One step of the pipeline; subclasses set `name` and implement `run` (and `show`)."""

    name: str = ""

    def applies(self, spec: Spec) -> bool:
        """Whether this spec runs the stage at all (the method table: `methods.seeds` > 0)."""
        return True

    def needs_ray(self, ctx: Context) -> bool:
        return True

    def intact(self, ctx: Context, record: dict[str, Any]) -> bool:
        """Whether what the finished stage left is still usable (derived files may need a rebuild)."""
        return True

    def run(self, ctx: Context) -> dict[str, Any]:
        raise NotImplementedError

    def show(self, ctx: Context, record: dict[str, Any]) -> None:
        """Print the stage's summary from its record."""
