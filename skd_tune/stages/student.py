"""The student searches: Optuna proposes (temperature, loss weights, lr, curriculum, ...), ASHA stops weak
trials early; each trial distils the cached teacher logits (no teacher forward pass in a trial).

`StudentStage` is the search of the spec as written (SKD). With `methods.search: per_method`,
`MethodSearchStage` runs the same search, with the same budget (num_samples, sampler, scheduler, seed),
for KD and for no-KD over the parameters each has (`methods.method_spaces`), so the method table
compares every method at its own best configuration.

With `search.objectives`, the SKD search (`StudentStage`) is multi-objective: Optuna proposes for all
objectives, ASHA and "the best trial" use the first, and the stage writes the Pareto front of its trials
(`pareto.py`) to `results/pareto.parquet`. The KD and no-KD searches stay single-objective on
`search.metric` (the method table compares methods at their best by it).
"""

from __future__ import annotations

from typing import Any

from ..errors import ResultsError
from ..experiment.layout import results_file
from ..experiment.results import format_value
from ..spec import Objective, Spec
from .base import Context, Stage

__all__ = ["MethodSearchStage", "StudentStage"]


class StudentStage(Stage):
    name = "student"
    method = "SKD"
    multi_objective = True  # searches search.objectives when the spec has them

    def objectives(self, spec: Spec) -> tuple[Objective, ...]:
        """The objectives this search optimises together; () for one objective (search.metric)."""
        return spec.search.objectives if self.multi_objective else ()

    def intact(self, ctx: Context, record: dict[str, Any]) -> bool:
        """A multi-objective search is intact with a readable front file (derived: rerunning the finished
        stage restores its Tune experiment, which has nothing left to run, and writes the front again)."""
        if not self.objectives(ctx.spec):
            return True
        try:
            return ctx.exp.result("pareto") is not None
        except ResultsError:
            return False

    def search(self, ctx: Context) -> tuple[dict[str, Any], dict[str, Any]]:
        """(the space this search explores, the parameters it holds fixed)."""
        return dict(ctx.spec.search.space), {}

    def run(self, ctx: Context) -> dict[str, Any]:
        from ..tune import run_tune_stage, trial_id_of
        from ..tune.search import CONTINUES
        from ..tune.trainables import student_trainable

        spec, s = ctx.spec, ctx.spec.search
        space, fixed = self.search(ctx)
        objectives = self.objectives(spec)
        if objectives:
            ctx.say(_objectives_line(self.name, objectives, s.scheduler.name))
        total = s.num_samples if space else 1  # nothing to search: one run of the spec's own values
        stage = ctx.student_stage(
            self.name,
            student_trainable,
            total,
            [*space, *fixed],
            {"fixed": fixed, "stage": self.name},
            space=space,
            scheduler=s.scheduler.name,
            fixed=fixed,
            objectives=objectives,
        )
        grid, tables = run_tune_stage(ctx.exp, spec, stage, **ctx.tune_args())
        # Each trial's final status, checkpoint and error from Ray, which knows them best (a trial restored
        # as finished reports no new events to the callback).
        known, went_on = set(), {}
        for result in grid:
            trial_id = trial_id_of(result)
            known.add(trial_id)
            went_on |= dict.fromkeys(result.config.get(CONTINUES) or [], trial_id)
            ckpt = result.checkpoint  # the latest: it carries the trial's best epoch's weights
            tables.set_trial(
                trial_id,
                params={**result.config, **fixed},
                status="ERROR" if result.error else "TERMINATED",
                checkpoint_path=ctx.exp.relative(ckpt.path) if ckpt is not None else None,
                error=str(result.error)[-4000:] if result.error else None,
                max_epochs=spec.student.epochs,
            )
        # A trial started by a driver that was SIGKILLed before Ray Tune snapshotted it does not exist for
        # the restored search, which gave its parameters to a new trial that went on from its checkpoints
        # (search.CONTINUES) and reported its epochs again as they were: its rows are the new trial's now.
        lost = [t for t in tables.trial_ids() if t not in known]
        for trial_id in lost:
            tables.drop_trial(trial_id)
        if lost:
            ctx.say(
                f"[{self.name}] {len(lost)} trial(s) started just before a kill that Ray Tune had not recorded went "
                "on as new trials: " + ", ".join(f"{t} -> {went_on.get(t, '(none)')}" for t in lost)
            )
        tables.flush(force=True)
        tables.close()
        record = {
            "method": self.method,
            "trials": total,
            "errored": grid.num_errors,
            "searched": list(space),
            "fixed": fixed,
        }
        return record | (self._write_front(ctx, objectives) if objectives else {})

    def _write_front(self, ctx: Context, objectives: tuple[Objective, ...]) -> dict[str, Any]:
        """Write the Pareto front of the stage's trials table; what the stage records of it."""
        from ..pareto import eligible, missing_columns, pareto_front

        trials = ctx.exp.trials(self.name)
        front = pareto_front(trials, objectives)
        ctx.exp.write_result("pareto", front)
        return {
            "pareto_front": len(front),
            "pareto_finished": len(eligible(trials, objectives)),
            "pareto_missing": missing_columns(trials, objectives),
        }

    def show(self, ctx: Context, record: dict[str, Any]) -> None:
        """The Pareto front's line (a multi-objective search); nothing for one objective."""
        if "pareto_front" not in record:
            return
        from ..pareto import describe_front

        try:
            front = ctx.exp.result("pareto")
        except ResultsError:
            front = None
        ranges = describe_front(front, ctx.spec.search.objectives) if front is not None else ""
        n, of = record["pareto_front"], record.get("pareto_finished", 0)
        missing = record.get("pareto_missing") or []
        why = f"; the trials table has no {', '.join(missing)} column: no trial reported it" if missing else ""
        ctx.say(
            f"[{self.name}] Pareto front: {n} trial{'s' if n != 1 else ''} (of {of} that finished all their epochs "
            f"with every objective{'; ' + ranges if ranges else ''}{why}) in {results_file('pareto')}"
        )


def _objectives_line(stage: str, objectives: tuple[Objective, ...], scheduler: str) -> str:
    """What the run says at the start of a multi-objective search: the objectives, and what ASHA does."""
    head = f"[{stage}] {len(objectives)} objectives ({', '.join(o.label() for o in objectives)})"
    first = objectives[0].metric
    if scheduler == "asha":
        return (
            f"{head}; ASHA stops trials on {first} alone, so a trial it stops early is not on the front; "
            "scheduler: fifo avoids that"
        )
    return f"{head}; scheduler {scheduler}: every trial trains all its epochs, and the front is chosen among them"


class MethodSearchStage(StudentStage):
    """The search of one baseline method (KD, no-KD) with the student search's budget, single-objective
    on search.metric (the first objective when the spec has several)."""

    multi_objective = False

    def __init__(self, name: str, method: str):
        self.name, self.method = name, method

    def applies(self, spec: Spec) -> bool:
        return spec.methods.seeds > 0 and spec.methods.search == "per_method"

    def search(self, ctx: Context) -> tuple[dict[str, Any], dict[str, Any]]:
        from ..methods import method_spaces

        spec = ctx.spec
        _, architecture = ctx.compared_point()
        return method_spaces(dict(spec.search.space), spec.student.w_kd, spec.student.w_skd, architecture)[self.method]

    def show(self, ctx: Context, record: dict[str, Any]) -> None:
        searched = ", ".join(record.get("searched") or []) or "nothing (one run of the spec's values)"
        fixed = ", ".join(f"{k}={format_value(v)}" for k, v in (record.get("fixed") or {}).items())
        ctx.say(f"[{self.name}] {self.method}: {record['trials']} trial(s) over {searched}; fixed {fixed}")
