"""The student search: Optuna proposes (temperature, loss weights, lr, curriculum, ...), ASHA stops weak
trials early; each trial distils the cached teacher logits (no teacher forward pass in a trial)."""

from __future__ import annotations

from typing import Any

from .base import Context, Stage

__all__ = ["StudentStage"]


class StudentStage(Stage):
    name = "student"

    def run(self, ctx: Context) -> dict[str, Any]:
        from ..tune import TuneStage, run_tune_stage, trial_id_of
        from ..tune.trainables import student_trainable

        spec, s = ctx.spec, ctx.spec.search
        stage = TuneStage(
            name="student",
            trainable=student_trainable,
            parameters={"spec": spec, "data": ctx.data, "teacher_logits": ctx.teacher_logits()["train"]},
            resources=spec.student.resources,
            total=s.num_samples,
            max_epochs=spec.student.epochs,
            param_names=list(s.space),
            space=dict(s.space),
            scheduler=s.scheduler.name,
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
                params=result.config,
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
                f"[student] dropped {len(lost)} trial(s) started just before a kill that Ray Tune had not "
                f"recorded: {', '.join(lost)}"
            )
        tables.flush(force=True)
        tables.close()
        return {"trials": s.num_samples, "errored": grid.num_errors}
