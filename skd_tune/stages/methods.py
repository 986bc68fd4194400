"""The method table: the best search configuration as no-KD, KD and SKD (methods.py), each retrained
with `methods.seeds` seeds as Ray Tune trials (experiment `final/`) and scored on the test split with
the weights of its best validation epoch. Writes the method runs (one row per method and seed) and
their summary (mean ± std per method, plus the teacher's row)."""

from __future__ import annotations

from typing import Any

from ..errors import PipelineError, last_line
from ..experiment import best_trial
from ..spec import Spec
from .base import Context, Stage, plain

__all__ = ["MethodsStage"]


class MethodsStage(Stage):
    name = "methods"

    def applies(self, spec: Spec) -> bool:
        return spec.methods.seeds > 0

    def intact(self, ctx: Context, record: dict[str, Any]) -> bool:
        """The summary is derived from the finished Tune experiment `final/`: missing, the stage runs again
        (restoring that experiment, nothing retrained)."""
        return ctx.exp.result("method_summary") is not None and ctx.exp.result("method_pairs") is not None

    def run(self, ctx: Context) -> dict[str, Any]:
        import pandas as pd

        from ..methods import METHODS, method_comparisons, method_params, method_table
        from ..tune import TuneStage, run_tune_stage, trial_id_of
        from ..tune.trainables import method_trainable

        spec, exp = ctx.spec, ctx.exp
        best = best_trial(exp.trials("student"), spec.search.metric, spec.search.mode)
        if best is None:
            raise PipelineError(f"no finished student trial to build the method table from; see {exp.results_dir}")
        params = {p: plain(best[p]) for p in spec.search.space}
        chosen = spec.student_for(params)
        configs = method_params(params, chosen.w_kd, chosen.w_skd)
        seeds = [spec.seed + k for k in range(spec.methods.seeds)]
        ctx.say(f"[methods] retraining the best configuration as no-KD, KD and SKD with {len(seeds)} seed(s) each")
        stage = TuneStage(
            name="methods",
            trainable=method_trainable,
            parameters={
                "spec": spec,
                "data": ctx.data,
                "teacher_logits": ctx.teacher_logits()["train"],
                "method_params": configs,
            },
            resources=spec.student.resources,
            total=len(METHODS) * len(seeds),
            max_epochs=spec.student.epochs,
            param_names=["method", "seed"],
            grid={"method": list(METHODS), "seed": seeds},
        )
        grid, tables = run_tune_stage(exp, spec, stage, **ctx.tune_args())
        per_trial = tables.trials_frame().set_index("trial_id")
        tables.close()
        rows = []
        for result in grid:
            cfg, last = result.config, result.metrics or {}
            trial_id = trial_id_of(result)
            student = spec.student_for(configs[cfg["method"]])
            row: dict[str, Any] = {
                "method": cfg["method"],
                "seed": int(cfg["seed"]),
                "trial_id": trial_id,
                "status": "ERROR" if result.error else "TERMINATED",
            }
            row |= {p: configs[cfg["method"]].get(p) for p in spec.search.space}
            row |= {k: getattr(student, k) for k in ("temperature", "w_ce", "w_kd", "w_skd", "lr")}
            row["best_epoch"] = last.get("best_epoch")
            if trial_id in per_trial.index:
                mine = per_trial.loc[trial_id]
                row |= {c.removeprefix("best_"): mine[c] for c in per_trial.columns if c.startswith("best_val_")}
            row |= {k: float(v) for k, v in last.items() if k.startswith("test_")}
            row["error"] = last_line(result.error) if result.error else None
            rows.append(row)
        order = {m: i for i, m in enumerate(METHODS)}
        runs = pd.DataFrame(rows).sort_values(
            ["method", "seed"], key=lambda c: c.map(order) if c.name == "method" else c
        )
        runs = runs.reset_index(drop=True)
        floor = (exp.done("export") or {}).get("constant") or {}
        table = method_table(runs, (exp.done("teacher_logits") or {}).get("test_metrics"), floor.get("metrics"))
        exp.write_result("method_runs", runs)
        exp.write_result("method_summary", table)
        exp.write_result("method_pairs", method_comparisons(runs))
        return {
            "seeds": seeds,
            "from_trial": best["trial_id"],
            "params": configs,
            "errored": grid.num_errors,
            "table": table.to_dict("records"),
        }

    def show(self, ctx: Context, record: dict[str, Any]) -> None:
        from ..methods import format_method_table

        table = ctx.exp.result("method_summary")  # (the record's copy went through JSON: NaN became null)
        pairs = ctx.exp.result("method_pairs")
        ctx.say(f"[methods] test metrics, mean ± std over paired seeds:\n{format_method_table(table, pairs)}")
