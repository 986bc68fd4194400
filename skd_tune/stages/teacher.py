"""The teacher stage: one trial, or a small Optuna search over `search.teacher.space` (e.g. the
auxiliary loss's beta and t_aux); the best trial by `search.metric` becomes the teacher. With
`teacher.source: checkpoint | logits` it loads and checks a teacher made elsewhere instead (in the
driver, no Ray: `skd_tune.teachers`), and records its validation metrics; with `data.subclasses:
clustered`, the trained teacher has one output per class (`data.class_view`)."""

from __future__ import annotations

import math
from typing import Any

from .base import Context, Stage, plain

__all__ = ["TeacherStage"]


class TeacherStage(Stage):
    name = "teacher"

    def needs_ray(self, ctx: Context) -> bool:
        return ctx.spec.teacher.source == "train"

    def run(self, ctx: Context) -> dict[str, Any]:
        if ctx.spec.teacher.source != "train":
            return _load(ctx)
        from ..data import class_view
        from ..tune import TuneStage, run_tune_stage, trial_id_of
        from ..tune.trainables import teacher_trainable

        spec, ts = ctx.spec, ctx.spec.search.teacher
        stage = TuneStage(
            name="teacher",
            trainable=teacher_trainable,
            parameters={"spec": spec, "data": class_view(ctx.data)},
            resources=spec.teacher.resources,
            total=ts.num_samples,
            max_epochs=spec.teacher.epochs,
            param_names=list(ts.space),
            space=dict(ts.space),
            reuse_actors=False,
        )
        grid, tables = run_tune_stage(ctx.exp, spec, stage, **ctx.tune_args())
        # The teacher is the best trial of the results table (ties: the first by trial id), the same row
        # that the table, status and report show; Ray's own pick may differ on ties.
        row = tables.best_trial() or {}
        tables.close()
        by_id = {trial_id_of(r): r for r in grid if r.checkpoint is not None and not r.error}
        best = by_id.get(row.get("trial_id")) or grid.get_best_result(spec.search.metric, spec.search.mode, scope="all")
        epoch = row.get("best_epoch")
        return {
            "checkpoint": ctx.exp.relative(best.checkpoint.path),  # the latest: it carries the best epoch's weights
            "params": {p: plain(v) for p, v in best.config.items() if p in ts.space},
            "metrics": {k.removeprefix("best_"): v for k, v in row.items() if k.startswith("best_val_")}
            | {"epoch": int(epoch) if epoch is not None and not math.isnan(epoch) else None},
        }

    def show(self, ctx: Context, record: dict[str, Any]) -> None:
        metric = ctx.spec.search.metric
        value = record["metrics"].get(metric, float("nan"))
        if "source" in record:
            ctx.say(f"[teacher] loaded ({record['source']}) from {record['path']}, checked: {metric} {value:.4f}")
        else:
            ctx.say(f"[teacher] done: {metric} {value:.4f}")


def _load(ctx: Context) -> dict[str, Any]:
    """Load and check the teacher made elsewhere; its outputs stay in `ctx.cache` for the logits stage."""
    from ..teachers import load_teacher
    from .teacher_logits import class_metrics

    loaded = load_teacher(ctx.spec, ctx.data)
    ctx.cache["teacher_outputs"] = loaded
    val = class_metrics(loaded.logits["val"], ctx.data, "val", class_level=ctx.data.clustered)
    return loaded.record | {"params": {}, "metrics": {f"val_{k}": v for k, v in val.items()} | {"epoch": None}}
