"""The sections of the report about the run: progress, the method table, the teacher, the exported
student, the leaderboard and the learning curves. Each says in a sentence when its input is not there
yet, so the report works while a search runs, or before anything ran.
"""

from __future__ import annotations

import math

import pandas as pd

from ..experiment import best_trial, trial_counts
from ..methods import METHODS, TEST_METRICS, floor_warnings, method_comparisons, method_table
from .load import Loaded, file_name
from .plots import Plots, plot_curves, plot_history, plot_methods, plot_pairs
from .render import Section, Table, epochs_cell, fmt, fmt_metric, mean_std, progress_line

__all__ = [
    "CURVES_MAX",
    "curves_section",
    "export_section",
    "leaderboard",
    "leaderboard_section",
    "methods_missing",
    "methods_section",
    "no_trial_sentence",
    "progress_section",
    "run_methods_table",
    "teacher_section",
]

CURVES_MAX = 10  # learning curves drawn at most (the top trials)
TEACHER_METRICS = ("f1", "accuracy", "auc", "precision", "recall", "loss", "subclass_accuracy")


def progress_section(ld: Loaded) -> Section:
    """Stages done and student trials by status."""
    done = ld.stages_done()
    return Section(
        "progress",
        "Progress",
        [
            "stages done: " + (", ".join(done) if done else "none yet") + ".",
            f"student trials: {progress_line(ld, pending=True)}; search metric {ld.metric} ({ld.mode}).",
        ],
    )


def run_methods_table(ld: Loaded) -> pd.DataFrame | None:
    """The method table (methods.method_table), or None when no method run has finished."""
    runs = ld.method_runs
    if runs is None or runs.empty or "method" not in runs:
        return None
    teacher = (ld.done("teacher_logits") or {}).get("test_metrics")
    floor = ((ld.done("export") or {}).get("constant") or {}).get("metrics")
    table = method_table(runs, teacher, floor)
    return table if int(table[table["method"].isin(METHODS)]["n"].sum()) > 0 else None


def methods_missing(ld: Loaded) -> str:
    """The sentence that says why there is no method table yet."""
    runs_file, seeds = file_name("method_runs"), ld.spec.methods.seeds
    if seeds == 0:
        return "The method stage is off in this spec (methods.seeds: 0), so there is no method table."
    if ld.method_runs is not None and not ld.method_runs.empty:
        return f"The method stage ran but none of its runs finished; see the `error` column of {runs_file}."
    if ld.method_trials is not None and not ld.method_trials.empty:
        finished = trial_counts(ld.method_trials, 0)["TERMINATED"]
        total = len(METHODS) * seeds
        return f"The method stage is running: {finished} of {total} runs finished (no {runs_file} yet)."
    return (
        f"The method stage has not run yet (no {runs_file}): it retrains the best configuration as "
        f"no-KD, KD and SKD with {seeds} seed(s) each once the search and the export are done."
    )


def methods_section(ld: Loaded, table: pd.DataFrame | None, plots: Plots) -> Section:
    """Method table (test split, mean ± std and the 95% interval over paired seeds), each pair's paired
    difference with its interval, test and verdict, and the F1 bar chart with the intervals."""
    sec = Section("methods", "Methods: no-KD, KD and SKD on the test split")
    if table is None:
        sec.blocks.append(methods_missing(ld))
        return sec
    sec.blocks.append(
        "Mean ± sample std over the seeds that finished, every method with the same seeds; the F1 interval "
        "is Student's t (95%) of the mean. The teacher is one run."
    )
    header = ["method", "seeds"] + [m if m != "auc" else "AUC" for m in TEST_METRICS] + ["f1 95% CI"]
    rows = [
        [str(rec["method"]), str(rec["n"])]
        + [mean_std(rec[f"{m}_mean"], rec[f"{m}_std"]) for m in TEST_METRICS]
        + ["-" if math.isnan(rec["f1_ci_low"]) else f"{rec['f1_ci_low']:.4f} to {rec['f1_ci_high']:.4f}"]
        for rec in table.to_dict("records")
    ]
    sec.blocks.append(Table(header, rows))
    sec.blocks.append(
        "Paired differences of the test F1 (same seeds), with the paired t-test (and the Wilcoxon signed-rank "
        "test from 6 seeds): " + "; ".join(method_comparisons(ld.method_runs)["line"]) + "."
    )
    sec.blocks.extend(floor_warnings(table))
    sec.blocks.append(_searches_sentence(ld))
    sec.blocks.extend(image for image in (plot_methods(table, plots), plot_pairs(ld.method_runs, plots)) if image)
    return sec


def _searches_sentence(ld: Loaded) -> str:
    """Where each method's configuration came from: its own search (per_method) or SKD's (shared)."""
    if ld.spec.methods.search == "shared":
        return "Configurations: the SKD search's best, retrained with only what is distilled changed (methods.search: shared)."
    parts = []
    for method, table in (("SKD", "student"), ("KD", "search_kd"), ("no-KD", "search_nokd")):
        trials = ld.exp.trials(table)
        best = best_trial(trials, ld.metric, ld.mode)
        n = 0 if trials is None else int((trials["status"] == "TERMINATED").sum())
        parts.append(
            f"{method} {n} trials"
            + (f", best {ld.metric} {best[ld.best_col]:.4f} ({best['trial_id']})" if best else "")
        )
    return "Configurations: each method's best trial of its own search, with the same budget: " + "; ".join(parts) + "."


def teacher_section(ld: Loaded) -> Section:
    """The teacher's validation metrics (its best epoch) and test metrics, or how far it got."""
    sec = Section("teacher", "Teacher")
    teacher = ld.done("teacher")
    test = (ld.done("teacher_logits") or {}).get("test_metrics")
    if teacher is None:
        sec.blocks.append(_teacher_progress(ld))
        return sec
    val = teacher.get("metrics") or {}
    names = [m for m in TEACHER_METRICS if f"val_{m}" in val or (test and m in test)]
    rows = [[f"validation (epoch {fmt(val.get('epoch'))})"] + [fmt_metric(val.get(f"val_{m}")) for m in names]]
    if test:
        rows.append(["test"] + [fmt_metric(test.get(m)) for m in names])
    sec.blocks.append(Table(["split"] + names, rows))
    if not test:
        sec.blocks.append(
            "The teacher's test metrics come with its cached logits (stage teacher_logits), not there yet."
        )
    return sec


def _teacher_progress(ld: Loaded) -> str:
    """How far the teacher got while it trains (its trials table), or that it has not reported yet."""
    tt, col = ld.teacher_trials, ld.best_col
    if tt is None or tt.empty or col not in tt or not tt[col].notna().any():
        return "The teacher has not reported an epoch yet."
    row = tt.iloc[0].to_dict()
    return (
        f"The teacher is still training: {epochs_cell(row)} epochs so far, best {ld.metric} "
        f"{fmt_metric(row.get(col))} (epoch {fmt(row.get('best_epoch'))})."
    )


def export_section(ld: Loaded) -> Section:
    """The exported best student: trial, where it is, and its test metrics."""
    sec = Section("export", "Exported best student")
    export = ld.done("export")
    if not export:
        sec.blocks.append("No student is exported yet: the export stage runs once the search is done.")
        return sec
    trial_id = export.get("trial_id")
    line = f"Trial {trial_id}, exported to {export.get('path', ld.exp.export_dir)}"
    trials = ld.trials
    if trials is not None and ld.best_col in trials and "trial_id" in trials:
        mine = trials[trials["trial_id"] == trial_id]
        if len(mine):
            line += f"; best {ld.metric} in the search {fmt_metric(mine.iloc[0][ld.best_col])}"
    sec.blocks.append(line + ".")
    test = export.get("test_metrics") or {}
    if test:
        sec.blocks.append(Table(["split"] + list(test), [["test"] + [fmt_metric(v) for v in test.values()]]))
    return sec


def no_trial_sentence(ld: Loaded) -> str:
    return (
        f"No student trial has reported yet ({file_name('trials')} has no {ld.best_col}); "
        "the search writes it as trials finish epochs."
    )


def leaderboard(ld: Loaded, top: int) -> Table | str:
    """The top `top` trials (rank, trial, metric, epochs, best epoch, status, params), or the sentence
    why there are none."""
    ranked = ld.ranked.head(top)
    if ranked.empty:
        return no_trial_sentence(ld)
    rows = [
        [
            str(i),
            str(rec["trial_id"]),
            fmt_metric(rec[ld.best_col]),
            epochs_cell(rec),
            fmt(rec.get("best_epoch")),
            str(rec.get("status", "-")),
        ]
        + [fmt(rec.get(p)) for p in ld.params]
        for i, rec in enumerate(ranked.to_dict("records"), start=1)
    ]
    return Table(["rank", "trial", ld.metric, "epochs", "best epoch", "status"] + ld.params, rows)


def leaderboard_section(ld: Loaded, board: Table | str, top: int) -> Section:
    """The top trials by the best value of the search metric, with their parameters."""
    sec = Section("leaderboard", f"Leaderboard: top {top} student trials by {ld.metric} ({ld.mode})")
    if isinstance(board, str):
        sec.blocks.append(board)
        return sec
    sec.blocks.append(
        f"{len(board.rows)} of the {len(ld.ranked)} trials that reported; "
        "epochs: trained / allowed (fewer: stopped early by the scheduler)."
    )
    sec.blocks.append(board)
    return sec


def curves_section(ld: Loaded, top: int, plots: Plots) -> Section:
    """Learning curves of the top trials and the optimisation history."""
    sec = Section("curves", "Learning curves and optimisation history")
    if ld.ranked.empty:
        sec.blocks.append(no_trial_sentence(ld))
        return sec
    ids = ld.ranked["trial_id"].head(min(top, CURVES_MAX)).tolist()
    image = plot_curves(ld, ids, plots)
    sec.blocks.append(
        image
        if image is not None
        else f"No learning curves: {file_name('epochs')} is not written yet or has no {ld.metric} column."
    )
    sec.blocks.append(plot_history(ld, plots))
    return sec
