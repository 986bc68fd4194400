"""The student searches: Optuna proposes (temperature, loss weights, lr, curriculum, ...), ASHA stops weak
trials early; each trial distils the cached teacher logits (no teacher forward pass in a trial).

`StudentStage` is the search of the spec as written (SKD). With `methods.search: per_method`,
`MethodSearchStage` runs the same search, with the same budget (num_samples, sampler, scheduler, seed),
for KD and for no-KD over the parameters each has (`methods.method_spaces`), so the method table
compares every method at its own best configuration.
"""

from __future__ import annotations

from typing import Any

from ..spec import Spec
from .base import Context, Stage

__all__ = ["MethodSearchStage", "StudentStage"]


class StudentStage(Stage):
    name = "student"
    method = "SKD"

    def search(self, spec: Spec) -> tuple[dict[str, Any], dict[str, float]]:
        """(the space this search explores, the parameters it holds fixed)."""
        return dict(spec.search.space), {}

    def run(self, ctx: Context) -> dict[str, Any]:
        from ..tune import run_tune_stage, trial_id_of
        from ..tune.trainables import student_trainable

        spec, s = ctx.spec, ctx.spec.search
        space, fixed = self.search(spec)
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
        )
        grid, tables = run_tune_stage(ctx.exp, spec, stage, **ctx.tune_args())
        # Each trial's final status, checkpoint and error from Ray, which knows them best (a trial restored
        # as finished reports no new events to the callback).
        known = set()
        for result in grid:
            trial_id = trial_id_of(result)
            known.add(trial_id)
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
        # the restored search (which filled its place with a new trial): drop what the journal had of it.
        lost = [t for t in tables.trial_ids() if t not in known]
        for trial_id in lost:
            tables.drop_trial(trial_id)
        if lost:
            ctx.say(
                f"[{self.name}] dropped {len(lost)} trial(s) started just before a kill that Ray Tune had not "
                f"recorded: {', '.join(lost)}"
            )
        tables.flush(force=True)
        tables.close()
        return {
            "method": self.method,
            "trials": total,
            "errored": grid.num_errors,
            "searched": list(space),
            "fixed": fixed,
        }


class MethodSearchStage(StudentStage):
    """The search of one baseline method (KD, no-KD) with the student search's budget."""

    def __init__(self, name: str, method: str):
        self.name, self.method = name, method

    def applies(self, spec: Spec) -> bool:
        return spec.methods.seeds > 0 and spec.methods.search == "per_method"

    def search(self, spec: Spec) -> tuple[dict[str, Any], dict[str, float]]:
        from ..methods import method_spaces

        return method_spaces(dict(spec.search.space), spec.student.w_kd, spec.student.w_skd)[self.method]

    def show(self, ctx: Context, record: dict[str, Any]) -> None:
        searched = ", ".join(record.get("searched") or []) or "nothing (one run of the spec's values)"
        fixed = ", ".join(f"{k}={v:g}" for k, v in (record.get("fixed") or {}).items())
        ctx.say(f"[{self.name}] {self.method}: {record['trials']} trial(s) over {searched}; fixed {fixed}")
