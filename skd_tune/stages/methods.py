"""The method table: no-KD, KD and SKD, each at its best configuration (the best trial of its own search
with `methods.search: per_method`, the default; with `shared`, the SKD search's best with only what is
distilled changed, methods.py), retrained with the same `methods.seeds` seeds (paired runs) as Ray Tune
trials (experiment `final/`) and scored on the test split with the weights of their best validation
epoch. Writes the method runs (one row per method and seed), their summary (mean, std and interval per
method, with the teacher's and the constant's rows) and the paired differences between the methods."""

from __future__ import annotations

from typing import Any

from ..errors import PipelineError, last_line
from ..experiment import best_trial
from ..experiment.results import format_value
from ..spec import Spec
from .base import Context, Stage, plain

__all__ = ["MethodsStage"]


# The search each method's configuration comes from, with methods.search: per_method.
_SEARCHES = {"SKD": "student", "KD": "search_kd", "no-KD": "search_nokd"}


def _configs(ctx: Context) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Each method's parameters and the trial they come from: the best trial of its own search
    (per_method), or the SKD search's best with only what is distilled changed (shared)."""
    from ..methods import method_params, method_spaces

    spec, exp = ctx.spec, ctx.exp
    point, architecture = ctx.compared_point()  # SKD: the best trial, or the one methods.point chooses
    bests = {"SKD": point}
    for method, search in _SEARCHES.items() if spec.methods.search == "per_method" else []:
        if method == "SKD":
            continue
        best = best_trial(exp.trials(search), spec.search.metric, spec.search.mode)
        if best is None:
            raise PipelineError(
                f"no finished trial in the {search} search to build the method table from; see {exp.results_dir}"
            )
        bests[method] = best
    if spec.methods.search == "shared":
        params = {p: plain(bests["SKD"][p]) for p in spec.search.space}
        chosen = spec.student_for(params)
        return method_params(params, chosen.w_kd, chosen.w_skd), dict.fromkeys(_SEARCHES, bests["SKD"]["trial_id"])
    spaces = method_spaces(dict(spec.search.space), spec.student.w_kd, spec.student.w_skd, architecture)
    configs = {m: {p: plain(bests[m][p]) for p in spaces[m][0]} | spaces[m][1] for m in _SEARCHES}
    return configs, {m: bests[m]["trial_id"] for m in _SEARCHES}


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

        from ..methods import METHODS, method_comparisons, method_table
        from ..tune import run_tune_stage, trial_id_of
        from ..tune.trainables import method_trainable

        spec, exp = ctx.spec, ctx.exp
        configs, from_trials = _configs(ctx)
        seeds = [spec.seed + k for k in range(spec.methods.seeds)]
        what = (
            "each method's best configuration"
            if spec.methods.search == "per_method"
            else "the best configuration as no-KD, KD and SKD"
        )
        ctx.say(f"[methods] retraining {what} with the same {len(seeds)} seed(s) each")
        point, architecture = ctx.compared_point()
        if architecture:
            held = ", ".join(f"{k}={format_value(v)}" for k, v in architecture.items())
            why = f"the best within {spec.methods.point}" if spec.methods.point else f"the best {spec.search.metric}"
            ctx.say(f"[methods] compared at SKD trial {point['trial_id']} ({why}); KD and no-KD hold {held}")
        stage = ctx.student_stage(
            "methods",
            method_trainable,
            len(METHODS) * len(seeds),
            ["method", "seed"],
            {"method_params": configs},
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
            "search": spec.methods.search,
            "from_trials": from_trials,
            "params": configs,
            "errored": grid.num_errors,
            "table": table.to_dict("records"),
        }

    def show(self, ctx: Context, record: dict[str, Any]) -> None:
        from ..methods import format_method_table

        table = ctx.exp.result("method_summary")  # (the record's copy went through JSON: NaN became null)
        pairs = ctx.exp.result("method_pairs")
        ctx.say(f"[methods] test metrics, mean ± std over paired seeds:\n{format_method_table(table, pairs)}")
