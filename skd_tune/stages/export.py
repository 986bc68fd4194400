"""The export stage: the best student of the search as `export/` (a state_dict and its meta.json),
loaded back as a user would and scored on the test split."""

from __future__ import annotations

from typing import Any

from ..errors import PipelineError
from ..experiment import best_trial
from .base import Context, Stage

__all__ = ["ExportStage"]


class ExportStage(Stage):
    name = "export"

    def needs_ray(self, ctx: Context) -> bool:
        return False

    def intact(self, ctx: Context, record: dict[str, Any]) -> bool:
        """The export is derived from the best trial's checkpoint: missing, it is written again."""
        from ..serve import is_export_dir

        return is_export_dir(ctx.exp.export_dir)

    def run(self, ctx: Context) -> dict[str, Any]:
        from ..metrics import constant_metrics
        from ..serve.chosen import export_trial

        spec, exp, data = ctx.spec, ctx.exp, ctx.data
        best = best_trial(exp.trials("student"), spec.search.metric, spec.search.mode)
        if best is None or not isinstance(best.get("checkpoint_path"), str):
            raise PipelineError(
                f"no student trial with a checkpoint to export; see the student trials of {exp.results_dir}"
            )
        exported = export_trial(exp, spec, data, best, exp.export_dir)
        exp.sync(exp.export_dir.name)
        floor, floor_metrics = constant_metrics(
            data.classes("test"), data.classes("train"), data.num_classes, data.positive_class
        )
        return {
            "trial_id": best["trial_id"],
            "params": exported["params"],
            "val": float(best[f"best_{spec.search.metric}"]),
            "test_metrics": exported["test_metrics"],
            "path": exp.export_dir.name,
            "constant": {"name": floor, "metrics": floor_metrics},
        }

    def show(self, ctx: Context, record: dict[str, Any]) -> None:
        test, metric = record["test_metrics"], ctx.spec.search.metric
        val = record.get("val", float("nan"))
        ctx.say(
            f"[export] best student {record['trial_id']} ({metric} {val:.4f}) exported to {ctx.exp.export_dir}; "
            f"loaded back: test f1 {test['f1']:.4f}, accuracy {test['accuracy']:.4f}, auc {test['auc']:.4f}"
        )
        floor = record.get("constant")
        if floor and test["f1"] <= floor["metrics"]["f1"]:
            ctx.say(
                f"[export] warning: the best student's test F1 {test['f1']:.4f} does not beat predicting one class "
                f"for every sample ({floor['name']}: F1 {floor['metrics']['f1']:.4f}); the search found nothing "
                "that learned: check the learning rate and the epochs"
            )
