"""`skd-tune report`: one experiment directory as `report/index.html`, `report/summary.md` and PNG plots.

What the report shows, section by section (each one says so in a sentence when its input is not
there yet, so the report works while a search runs, or before anything ran):

- progress: stages done and student trials by status;
- the method table (no-KD, KD, SKD on the test split, mean ± std over seeds, plus the teacher), the
  F1 gains SKD − KD and SKD − no-KD, and a bar chart of the test F1 with std error bars;
- the teacher (validation metrics at its best epoch, test metrics) and the exported best student;
- the leaderboard of the top student trials with their parameters, the learning curves of those
  trials, and the optimisation history (each trial's best value in the order the trials started, with
  the running best);
- the search metric against each searched parameter (scatter for numeric ones, log x for loguniform
  ones; box plots for choices such as `curriculum.pacing`);
- fANOVA parameter importances (Optuna's evaluator on an in-memory study of the finished trials);
- the data: label bits H(S|C) of the training set, subclass counts, and the usage of invented
  subclasses when the teacher invented them.

Files read (all under the experiment directory; only the first two must exist): `spec.yaml`,
`state.json`, `results/trials.parquet`, `results/epochs.parquet`, `results/teacher_trials.parquet`,
`results/methods.parquet` (or, while the method stage runs, `results/methods_trials.parquet`),
`results/data.json`, `results/subclasses.json`. Nothing here imports Ray; every output file is written
to a temporary name and renamed, so a browser never sees half a file.
"""

from __future__ import annotations

import html
import json
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import yaml
from pydantic import ValidationError

from .errors import NotAnExperiment, ResultsError, UserError
from .methods import METHODS, TEST_METRICS, format_method_table, method_gains, method_table
from .results import read_table
from .spec import Distribution, MethodsSpec, SearchSpec, Spec

if TYPE_CHECKING:  # annotations only: matplotlib is imported when a plot is drawn
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from optuna.distributions import BaseDistribution

__all__ = ["Report", "build_report"]

STAGES = ("teacher", "teacher_logits", "student", "export", "methods")
MIN_TRIALS_FOR_IMPORTANCE = 3  # fANOVA on fewer finished trials says nothing
CURVES_MAX = 10  # learning curves drawn at most (the top trials)
DPI = 100
STATUS_COLOURS = {"TERMINATED": "tab:blue", "RUNNING": "tab:orange", "ERROR": "tab:red", "PAUSED": "tab:gray"}


@dataclass
class Report:
    """What `build_report` wrote: the HTML page, the markdown summary, the CLI text and each PNG by name."""

    html: Path
    summary: Path
    text: str
    plots: dict[str, Path] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------------
# Reading the experiment


@dataclass
class _Experiment:
    """Everything the report reads from one experiment directory (None: that file is not there yet)."""

    root: Path
    name: str
    search: SearchSpec
    seeds: int
    state: dict[str, Any]
    trials: pd.DataFrame | None = None
    epochs: pd.DataFrame | None = None
    teacher_trials: pd.DataFrame | None = None
    methods: pd.DataFrame | None = None
    methods_trials: pd.DataFrame | None = None
    data: dict[str, Any] | None = None
    subclasses: dict[str, Any] | None = None

    @property
    def stages(self) -> dict[str, Any]:
        return self.state.get("stages") or {}

    @property
    def metric(self) -> str:
        return self.search.metric

    @property
    def best_col(self) -> str:
        return f"best_{self.search.metric}"


def _load_experiment(path: str | Path) -> _Experiment:
    """Read the experiment at `path`; raise NotAnExperiment / ResultsError with a one-paragraph message."""
    root = Path(path)
    if not root.is_dir():
        raise NotAnExperiment(
            f"{root}: no such directory. Give the directory of an experiment, the one `skd-tune run` created "
            "as STORAGE/NAME and that holds spec.yaml and state.json, e.g. runs/digits-skd"
        )
    if not (root / "spec.yaml").is_file():
        raise NotAnExperiment(
            f"{root}: not an skd-tune experiment (it has no spec.yaml). Give the directory that `skd-tune run` "
            "created as STORAGE/NAME, which holds spec.yaml and state.json, e.g. runs/digits-skd"
        )
    name, search, seeds = _read_spec(root / "spec.yaml")
    results = root / "results"
    return _Experiment(
        root=root,
        name=name,
        search=search,
        seeds=seeds,
        state=_read_state(root / "state.json"),
        trials=_read_parquet(results / "trials.parquet", root),
        epochs=_read_parquet(results / "epochs.parquet", root),
        teacher_trials=_read_parquet(results / "teacher_trials.parquet", root),
        methods=_read_parquet(results / "methods.parquet", root),
        methods_trials=_read_parquet(results / "methods_trials.parquet", root),
        data=_read_json(results / "data.json", root),
        subclasses=_read_json(results / "subclasses.json", root),
    )


def _read_spec(path: Path) -> tuple[str, SearchSpec, int]:
    """Name, search section and method seeds of the frozen spec.

    The whole spec is validated first; when that fails only because of parts the report does not
    read (e.g. a `data.root` that is relative to another working directory), the `search` and
    `methods` sections alone are enough.
    """
    try:
        raw = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise NotAnExperiment(_spec_damaged(path, str(e).splitlines()[0])) from None
    if not isinstance(raw, dict):
        raise NotAnExperiment(_spec_damaged(path, f"the top level is a {type(raw).__name__}, not a mapping"))
    try:
        spec: Spec | None = Spec.model_validate(raw)
    except ValidationError:
        spec = None  # the report needs only the search and methods sections: validated alone below
    if spec is not None:
        return spec.name, spec.search, spec.methods.seeds
    try:
        search = SearchSpec.model_validate(raw.get("search") or {})
        seeds = MethodsSpec.model_validate(raw.get("methods") or {}).seeds
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise NotAnExperiment(_spec_damaged(path, f"{where}: {err['msg']}")) from None
    return str(raw.get("name") or path.parent.name), search, seeds


def _spec_damaged(path: Path, reason: str) -> str:
    return (
        f"{path}: not a valid skd-tune spec ({reason}). `skd-tune run` writes this frozen copy of the spec "
        "when an experiment starts; it was damaged or edited. Restore it from the spec the experiment was run "
        "with (e.g. search_spaces/NAME.yaml) and run the report again"
    )


def _read_state(path: Path) -> dict[str, Any]:
    """state.json, or no stages at all when it is not written yet (a run that is just starting)."""
    if not path.exists():
        return {"stages": {}}
    try:
        state = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise NotAnExperiment(
            f"{path}: not valid JSON ({e}); the file was damaged. Delete it and run `skd-tune run "
            f"{path.parent}` to redo the stages it recorded (finished Ray Tune experiments are resumed, "
            "not recomputed), then run the report again"
        ) from None
    if not isinstance(state, dict) or not isinstance(state.get("stages", {}), dict):
        raise NotAnExperiment(
            f"{path}: not an skd-tune state file (no `stages` mapping); delete it and run "
            f"`skd-tune run {path.parent}` to rebuild it"
        )
    return state


def _read_parquet(path: Path, root: Path) -> pd.DataFrame | None:
    """The table at `path` (None when not written yet); a damaged file is a ResultsError naming the fix."""
    try:
        return read_table(path)
    except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid (a ValueError) / ArrowIOError (an OSError)
        raise ResultsError(
            f"{path}: not a readable Parquet file ({str(e).splitlines()[0]}). It was damaged (a full disk, "
            f"or a copy taken with another tool while it was written); move it aside and resume the run with "
            f"`skd-tune run {root}`, which writes it again, then run the report again"
        ) from None


def _read_json(path: Path, root: Path) -> dict[str, Any] | None:
    """The JSON object at `path` (None when not written yet); a damaged file is a ResultsError."""
    if not path.exists():
        return None
    try:
        value = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ResultsError(_json_damaged(path, root, f"not valid JSON: {e}")) from None
    if not isinstance(value, dict):
        raise ResultsError(_json_damaged(path, root, f"a JSON {type(value).__name__}, not an object"))
    return value


def _json_damaged(path: Path, root: Path, reason: str) -> str:
    return (
        f"{path}: {reason}. It was damaged; delete it and resume the run with `skd-tune run {root}`, "
        "which writes it again, then run the report again"
    )


# --------------------------------------------------------------------------------------------------
# Content blocks, rendered both as markdown and as HTML


@dataclass
class _Table:
    header: list[str]
    rows: list[list[str]]


@dataclass
class _Image:
    key: str
    caption: str


@dataclass
class _Section:
    anchor: str
    title: str
    blocks: list[str | _Table | _Image] = field(default_factory=list)


class _Plots:
    """Where the PNGs go and which were written (name -> path)."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.paths: dict[str, Path] = {}

    def save(self, key: str, fig: Figure) -> _Image:
        """Write `fig` as `<key>.png` atomically and register it; returns the block that shows it."""
        path = self.out_dir / f"{key}.png"
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fig.savefig(tmp, format="png", dpi=DPI)
        os.replace(tmp, path)
        self.paths[key] = path
        return _Image(key, fig.get_suptitle() or key)


def _figure(width: float = 7.0, height: float = 4.2) -> Figure:
    """A matplotlib Figure of the object API (no pyplot, no global backend)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


# --------------------------------------------------------------------------------------------------
# Formatting helpers


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def _fmt(v: Any) -> str:
    """A parameter value: 4 significant digits for floats, '-' for missing."""
    if v is None or (_is_num(v) and math.isnan(float(v))) or v is pd.NA:
        return "-"
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.4g}"
    return str(v)


def _fmt_metric(v: Any) -> str:
    """A metric value with 4 decimals, '-' for missing."""
    if v is None or v is pd.NA or not _is_num(v) or math.isnan(float(v)):
        return "-"
    return f"{float(v):.4f}"


def _safe(name: str) -> str:
    """A parameter name as a file-name part: `curriculum.pacing` -> `curriculum_pacing`."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name)


def _params(exp: _Experiment) -> list[str]:
    """The searched parameters that have a column in trials.parquet."""
    cols = set(exp.trials.columns) if exp.trials is not None else set()
    return [p for p in exp.search.space if p in cols]


def _reported(exp: _Experiment) -> pd.DataFrame:
    """Student trials with a finite value of the search metric, best first (ties by trial id)."""
    df = exp.trials
    if df is None or df.empty or exp.best_col not in df:
        return pd.DataFrame()
    df = df[pd.to_numeric(df[exp.best_col], errors="coerce").notna()].copy()
    df[exp.best_col] = df[exp.best_col].astype(float)
    df = df.sort_values("trial_id", kind="stable")
    return df.sort_values(exp.best_col, ascending=exp.search.mode == "min", kind="stable").reset_index(drop=True)


def _counts(exp: _Experiment) -> dict[str, int]:
    """Student trials by status; trials the search has not started yet count as PENDING."""
    counts = {"TERMINATED": 0, "RUNNING": 0, "ERROR": 0, "PENDING": 0}
    if exp.trials is not None and "status" in exp.trials:
        for status, n in exp.trials["status"].astype(str).value_counts().items():
            counts[status] = counts.get(status, 0) + int(n)
    counts["PENDING"] += max(exp.search.num_samples - sum(counts.values()), 0)
    return counts


def _epochs_cell(row: dict[str, Any]) -> str:
    """`5/20` (epochs trained / epochs allowed) or `5` when the budget is not recorded."""
    done, budget = row.get("epochs"), row.get("max_epochs")
    if not _is_num(done):
        return "-"
    if _is_num(budget) and not math.isnan(float(budget)):
        return f"{int(done)}/{int(budget)}"
    return str(int(done))


# --------------------------------------------------------------------------------------------------
# Sections


def _progress_section(exp: _Experiment) -> _Section:
    """Stages done and student trials by status."""
    done = [s for s in STAGES if s in exp.stages]
    c = _counts(exp)
    sec = _Section("progress", "Progress")
    sec.blocks.append("stages done: " + (", ".join(done) if done else "none yet") + ".")
    sec.blocks.append(
        f"student trials: {c['TERMINATED']}/{exp.search.num_samples} terminated, {c['RUNNING']} running, "
        f"{c['PENDING']} pending, {c['ERROR']} errored; search metric {exp.metric} ({exp.search.mode})."
    )
    return sec


def _methods_table(exp: _Experiment) -> pd.DataFrame | None:
    """The method table (methods.method_table), or None when no method run has finished."""
    if exp.methods is None or exp.methods.empty or "method" not in exp.methods:
        return None
    teacher = (exp.stages.get("teacher_logits") or {}).get("test_metrics")
    table = method_table(exp.methods, teacher)
    return table if int(table[table["method"].isin(METHODS)]["n"].sum()) > 0 else None


def _methods_missing(exp: _Experiment) -> str:
    """The sentence that says why there is no method table yet."""
    total = len(METHODS) * exp.seeds
    if exp.seeds == 0:
        return "The method stage is off in this spec (methods.seeds: 0), so there is no method table."
    if exp.methods is not None and not exp.methods.empty:
        return "The method stage ran but none of its runs finished; see the `error` column of results/methods.parquet."
    if exp.methods_trials is not None and not exp.methods_trials.empty:
        finished = int((exp.methods_trials.get("status", pd.Series(dtype=str)) == "TERMINATED").sum())
        return f"The method stage is running: {finished} of {total} runs finished (no results/methods.parquet yet)."
    return (
        f"The method stage has not run yet (no results/methods.parquet): it retrains the best configuration as "
        f"no-KD, KD and SKD with {exp.seeds} seed(s) each once the search and the export are done."
    )


def _mean_std(mean: float, std: float) -> str:
    """`0.9123 ± 0.0045`, just the mean for one run, '-' for none (as methods.format_method_table)."""
    if math.isnan(mean):
        return "-"
    return f"{mean:.4f}" if math.isnan(std) else f"{mean:.4f} ± {std:.4f}"


def _methods_section(exp: _Experiment, table: pd.DataFrame | None, plots: _Plots) -> _Section:
    """Method table (test split, mean ± std over seeds), the F1 gains, and the F1 bar chart."""
    sec = _Section("methods", "Methods: no-KD, KD and SKD on the test split")
    if table is None:
        sec.blocks.append(_methods_missing(exp))
        return sec
    sec.blocks.append("Mean ± sample std over the seeds that finished; the teacher is one run.")
    header = ["method", "seeds"] + [m if m != "auc" else "AUC" for m in TEST_METRICS]
    rows = []
    for rec in table.to_dict("records"):
        cells = [str(rec["method"]), str(rec["n"])]
        rows.append(cells + [_mean_std(rec[f"{m}_mean"], rec[f"{m}_std"]) for m in TEST_METRICS])
    sec.blocks.append(_Table(header, rows))
    gains = method_gains(table)
    sec.blocks.append(
        "F1 gains: "
        + "; ".join(
            f"{k.replace(' - ', ' − ')} {'-' if math.isnan(v) else f'{v:+.4f} ({v * 100:+.2f} points)'}"
            for k, v in gains.items()
        )
        + "."
    )
    image = _plot_methods(table, plots)
    if image is not None:
        sec.blocks.append(image)
    return sec


def _plot_methods(table: pd.DataFrame, plots: _Plots) -> _Image | None:
    """Bar chart of the mean test F1 per method, std error bars; the teacher as a hatched bar."""
    rows = table[table["f1_mean"].notna()]
    if rows.empty:
        return None
    fig = _figure(6.0, 4.0)
    ax = fig.add_subplot()
    names = rows["method"].tolist()
    means = rows["f1_mean"].to_numpy(float)
    stds = np.nan_to_num(rows["f1_std"].to_numpy(float))
    colours = [
        "tab:gray"
        if m == "teacher"
        else {"no-KD": "tab:red", "KD": "tab:orange", "SKD": "tab:green"}.get(m, "tab:blue")
        for m in names
    ]
    bars = ax.bar(names, means, yerr=stds, capsize=6, color=colours, edgecolor="black")
    for bar, method in zip(bars, names):
        if method == "teacher":
            bar.set_hatch("//")
    ax.bar_label(bars, labels=[f"{m:.4f}" for m in means], padding=3, fontsize=9)
    low, high = float(np.min(means - stds)), float(np.max(means + stds))
    span = max(high - low, 0.02)
    ax.set_ylim(max(0.0, low - 0.5 * span), high + 0.35 * span)  # zoomed in: the differences are small
    ax.set_ylabel("test F1 (mean ± std over seeds)")
    ax.grid(axis="y", alpha=0.3)
    fig.suptitle("Test F1 per method")
    return plots.save("methods", fig)


def _teacher_section(exp: _Experiment) -> _Section:
    """The teacher's validation metrics (its best epoch) and test metrics, or how far it got."""
    sec = _Section("teacher", "Teacher")
    teacher = exp.stages.get("teacher")
    test = (exp.stages.get("teacher_logits") or {}).get("test_metrics")
    if teacher is None:
        tt = exp.teacher_trials
        col = exp.best_col
        if tt is not None and not tt.empty and col in tt and tt[col].notna().any():
            row = tt.iloc[0].to_dict()
            sec.blocks.append(
                f"The teacher is still training: {_epochs_cell(row)} epochs so far, best {exp.metric} "
                f"{_fmt_metric(row.get(col))} (epoch {_fmt(row.get('best_epoch'))})."
            )
        else:
            sec.blocks.append("The teacher has not reported an epoch yet.")
        return sec
    val = teacher.get("metrics") or {}
    names = [
        m
        for m in ("f1", "accuracy", "auc", "precision", "recall", "loss", "subclass_accuracy")
        if f"val_{m}" in val or (test and m in test)
    ]
    rows = [[f"validation (epoch {_fmt(val.get('epoch'))})"] + [_fmt_metric(val.get(f"val_{m}")) for m in names]]
    if test:
        rows.append(["test"] + [_fmt_metric(test.get(m)) for m in names])
    sec.blocks.append(_Table(["split"] + names, rows))
    if not test:
        sec.blocks.append(
            "The teacher's test metrics come with its cached logits (stage teacher_logits), not there yet."
        )
    return sec


def _export_section(exp: _Experiment) -> _Section:
    """The exported best student: trial, where it is, and its test metrics."""
    sec = _Section("export", "Exported best student")
    export = exp.stages.get("export")
    if not export:
        sec.blocks.append("No student is exported yet: the export stage runs once the search is done.")
        return sec
    trial_id = export.get("trial_id")
    line = f"Trial {trial_id}, exported to {export.get('path', exp.root / 'export')}"
    if exp.trials is not None and exp.best_col in exp.trials and "trial_id" in exp.trials:
        mine = exp.trials[exp.trials["trial_id"] == trial_id]
        if len(mine):
            line += f"; best {exp.metric} in the search {_fmt_metric(mine.iloc[0][exp.best_col])}"
    sec.blocks.append(line + ".")
    test = export.get("test_metrics") or {}
    if test:
        sec.blocks.append(_Table(["split"] + list(test), [["test"] + [_fmt_metric(v) for v in test.values()]]))
    return sec


def _leaderboard_rows(exp: _Experiment, top: int) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the top `top` trials: rank, trial, metric, epochs, best epoch, status, params."""
    ranked = _reported(exp).head(top)
    params = _params(exp)
    header = ["rank", "trial", exp.metric, "epochs", "best epoch", "status"] + params
    rows = []
    for i, rec in enumerate(ranked.to_dict("records"), start=1):
        rows.append(
            [
                str(i),
                str(rec["trial_id"]),
                _fmt_metric(rec[exp.best_col]),
                _epochs_cell(rec),
                _fmt(rec.get("best_epoch")),
                str(rec.get("status", "-")),
            ]
            + [_fmt(rec.get(p)) for p in params]
        )
    return header, rows


def _no_trial_sentence(exp: _Experiment) -> str:
    return (
        f"No student trial has reported yet (results/trials.parquet has no {exp.best_col}); "
        "the search writes it as trials finish epochs."
    )


def _leaderboard_section(exp: _Experiment, top: int) -> _Section:
    """The top trials by the best value of the search metric, with their parameters."""
    sec = _Section("leaderboard", f"Leaderboard: top {top} student trials by {exp.metric} ({exp.search.mode})")
    header, rows = _leaderboard_rows(exp, top)
    if not rows:
        sec.blocks.append(_no_trial_sentence(exp))
        return sec
    n = len(_reported(exp))
    sec.blocks.append(
        f"{len(rows)} of the {n} trials that reported; epochs: trained / allowed (fewer: stopped early by the scheduler)."
    )
    sec.blocks.append(_Table(header, rows))
    return sec


def _curves_section(exp: _Experiment, top: int, plots: _Plots) -> _Section:
    """Learning curves of the top trials and the optimisation history."""
    sec = _Section("curves", "Learning curves and optimisation history")
    ranked = _reported(exp)
    if ranked.empty:
        sec.blocks.append(_no_trial_sentence(exp))
        return sec
    ids = ranked["trial_id"].head(min(top, CURVES_MAX)).tolist()
    image = _plot_curves(exp, ids, plots)
    sec.blocks.append(
        image
        if image is not None
        else f"No learning curves: results/epochs.parquet is not written yet or has no {exp.metric} column."
    )
    image = _plot_history(exp, ranked, plots)
    if image is not None:
        sec.blocks.append(image)
    return sec


def _plot_curves(exp: _Experiment, trial_ids: list[str], plots: _Plots) -> _Image | None:
    """Validation metric per epoch of the given trials (best first in the legend)."""
    ep = exp.epochs
    if ep is None or ep.empty or exp.metric not in ep or "epoch" not in ep:
        return None
    fig = _figure()
    ax = fig.add_subplot()
    drawn = 0
    for trial_id in trial_ids:
        mine = ep[ep["trial_id"] == trial_id].sort_values("epoch")
        if len(mine):
            ax.plot(mine["epoch"], mine[exp.metric].astype(float), marker="o", markersize=3, label=str(trial_id))
            drawn += 1
    if not drawn:
        return None
    ax.set_xlabel("epoch")
    _integer_x(ax)
    ax.set_ylabel(exp.metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncols=2 if drawn > 5 else 1, title="trial (best first)", title_fontsize=8)
    fig.suptitle(f"Learning curves of the top {drawn} trials")
    return plots.save("learning_curves", fig)


def _start_order(exp: _Experiment, ranked: pd.DataFrame) -> pd.DataFrame:
    """The reported trials in the order they started (first epoch's timestamp; ties by trial id)."""
    ep = exp.epochs
    df = ranked.copy()
    if ep is not None and not ep.empty and "timestamp" in ep:
        first = ep.groupby("trial_id")["timestamp"].min()
        df["_start"] = df["trial_id"].map(first).astype(float)
    else:
        df["_start"] = np.nan
    return df.sort_values(["_start", "trial_id"], kind="stable", na_position="last").reset_index(drop=True)


def _plot_history(exp: _Experiment, ranked: pd.DataFrame, plots: _Plots) -> _Image | None:
    """Each trial's best metric in the order the trials started, with the running best."""
    df = _start_order(exp, ranked)
    values = df[exp.best_col].to_numpy(float)
    order = np.arange(1, len(df) + 1)
    best = np.fmax.accumulate(values) if exp.search.mode == "max" else np.fmin.accumulate(values)
    fig = _figure()
    ax = fig.add_subplot()
    statuses = df.get("status", pd.Series(["TERMINATED"] * len(df))).astype(str).to_numpy()
    for status in sorted(set(statuses)):
        mask = statuses == status
        ax.scatter(
            order[mask], values[mask], color=STATUS_COLOURS.get(status, "tab:purple"), label=status.lower(), zorder=3
        )
    ax.step(order, best, where="post", color="black", linewidth=1.5, label=f"best so far ({exp.search.mode})")
    ax.set_xlabel("trial, in the order trials started")
    _integer_x(ax)
    ax.set_ylabel(f"best {exp.metric} of the trial")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.suptitle("Optimisation history")
    return plots.save("history", fig)


def _params_section(exp: _Experiment, plots: _Plots) -> _Section:
    """The search metric against each searched parameter (scatter, or box plots for choices)."""
    sec = _Section("parameters", f"{exp.metric} against the searched parameters")
    params = _params(exp)
    ranked = _reported(exp)
    if not exp.search.space:
        sec.blocks.append("No parameter is searched (search.space is empty).")
        return sec
    if ranked.empty:
        sec.blocks.append(_no_trial_sentence(exp))
        return sec
    sec.blocks.append("Each point is a trial's best epoch; the star marks the best trial. Choices are box plots.")
    for name in params:
        dist = exp.search.space[name]
        if dist.kind == "choice":
            image = _plot_choice(exp, ranked, name, dist, plots)
        else:
            image = _plot_numeric(exp, ranked, name, dist, plots)
        if image is not None:
            sec.blocks.append(image)
    return sec


def _plot_numeric(
    exp: _Experiment, ranked: pd.DataFrame, name: str, dist: Distribution, plots: _Plots
) -> _Image | None:
    """Scatter of the metric against a numeric parameter (log x for loguniform)."""
    x = pd.to_numeric(ranked[name], errors="coerce").to_numpy(float)
    y = ranked[exp.best_col].to_numpy(float)
    ok = np.isfinite(x)
    if not ok.any():
        return None
    fig = _figure(6.0, 4.0)
    ax = fig.add_subplot()
    ax.scatter(x[ok], y[ok], alpha=0.8, edgecolor="black", linewidth=0.5, zorder=3)
    if ok[0]:
        ax.scatter(
            x[:1],
            y[:1],
            marker="*",
            s=220,
            color="gold",
            edgecolor="black",
            zorder=4,
            label=f"best ({ranked['trial_id'].iloc[0]})",
        )
        fig.legend(loc="outside lower right", fontsize=8, frameon=False)
    if dist.kind == "loguniform":
        _log_axis(ax)
    low, high = getattr(dist, dist.kind)
    if low < high:
        pad = 0.0 if dist.kind == "loguniform" else 0.03 * (high - low)
        ax.set_xlim(
            low / 1.1 if dist.kind == "loguniform" else low - pad,
            high * 1.1 if dist.kind == "loguniform" else high + pad,
        )
    ax.set_xlabel(f"{name} ({dist.kind} [{_fmt(low)}, {_fmt(high)}])")
    ax.set_ylabel(f"best {exp.metric}")
    ax.grid(alpha=0.3)
    fig.suptitle(f"{exp.metric} against {name}")
    return plots.save(f"param_{_safe(name)}", fig)


def _log_axis(ax: Axes) -> None:
    """Log x axis with plain tick labels at 1, 2, 5 x 10^k (readable over one or two decades)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _integer_x(ax: Axes) -> None:
    """Integer ticks on the x axis (epochs, trial numbers)."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _plot_choice(exp: _Experiment, ranked: pd.DataFrame, name: str, dist: Distribution, plots: _Plots) -> _Image | None:
    """Box plot of the metric per choice of a categorical parameter, the trials as jittered points."""
    values = ranked[name].astype(str).to_numpy()
    y = ranked[exp.best_col].to_numpy(float)
    choices = [str(c) for c in dist.choice or []]
    choices += sorted(set(values) - set(choices) - {"None", "nan", "<NA>"})
    groups = [(c, y[values == c]) for c in choices if (values == c).any()]
    if not groups:
        return None
    fig = _figure(6.0, 4.0)
    ax = fig.add_subplot()
    positions = np.arange(1, len(groups) + 1)
    ax.boxplot(
        [g for _, g in groups],
        positions=positions,
        tick_labels=[f"{c}\n(n={len(g)})" for c, g in groups],
        widths=0.5,
        showfliers=False,
    )
    rng = np.random.default_rng(0)  # jitter only: fixed so the picture does not change between runs
    for pos, (_, g) in zip(positions, groups):
        ax.scatter(pos + rng.uniform(-0.12, 0.12, len(g)), g, alpha=0.7, s=18, color="tab:blue", zorder=3)
    ax.set_xlabel(name)
    ax.set_ylabel(f"best {exp.metric}")
    ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"{exp.metric} against {name}")
    return plots.save(f"param_{_safe(name)}", fig)


def _optuna_distribution(dist: Distribution) -> BaseDistribution:
    """The Optuna distribution of a spec search-space entry."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if dist.kind == "choice":
        return CategoricalDistribution(list(dist.choice or []))
    if dist.kind == "int":
        return IntDistribution(int(dist.int[0]), int(dist.int[1]))
    low, high = getattr(dist, dist.kind)
    return FloatDistribution(float(low), float(high), log=dist.kind == "loguniform")


def _param_value(value: Any, dist: Distribution) -> Any:
    """A trials.parquet cell as the Python value its Optuna distribution holds (None: not usable)."""
    if value is None or value is pd.NA or (_is_num(value) and math.isnan(float(value))):
        return None
    value = value.item() if isinstance(value, np.generic) else value
    if dist.kind == "choice":
        return next((c for c in dist.choice or [] if c == value or str(c) == str(value)), None)
    if dist.kind == "int":
        return int(value)
    return float(value)


def _importances(exp: _Experiment) -> tuple[dict[str, float] | None, str, int]:
    """fANOVA importances over the finished trials: (importances or None, sentence why not, trials used)."""
    import optuna

    params = _params(exp)
    if not params:
        return None, "No parameter is searched, so there are no importances.", 0
    done = _reported(exp)
    done = done[done["status"].astype(str) == "TERMINATED"] if "status" in done else done
    dists = {p: _optuna_distribution(exp.search.space[p]) for p in params}
    trials = []
    for rec in done.to_dict("records"):
        values = {p: _param_value(rec.get(p), exp.search.space[p]) for p in params}
        if any(v is None for v in values.values()):
            continue  # a trial whose parameter is outside the current space cannot join the study
        try:
            trials.append(optuna.trial.create_trial(params=values, distributions=dists, value=float(rec[exp.best_col])))
        except ValueError:
            continue  # a value outside its distribution (the space was edited after the trial ran)
    n = len(trials)
    if n < MIN_TRIALS_FOR_IMPORTANCE:
        return (
            None,
            (f"Parameter importances need at least {MIN_TRIALS_FOR_IMPORTANCE} finished trials; {n} finished so far."),
            n,
        )
    if np.ptp([t.value for t in trials]) == 0:
        return None, f"All {n} finished trials have the same {exp.metric}, so no parameter explains anything.", n
    study = optuna.create_study(direction="maximize" if exp.search.mode == "max" else "minimize")
    study.add_trials(trials)
    try:
        imp = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0)
        )
    except RuntimeError as e:  # fANOVA's "zero total variance": the forest found nothing to explain
        return None, f"fANOVA could not rank the parameters ({e}).", n
    if not imp:
        return None, "No searched parameter takes more than one value, so there are no importances.", n
    return {k: float(v) for k, v in imp.items()}, "", n


def _importance_section(exp: _Experiment, plots: _Plots) -> _Section:
    """Parameter importances: a table and a bar chart (or the sentence why there are none)."""
    import optuna

    sec = _Section("importances", "Parameter importances (fANOVA)")
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        imp, why, n = _importances(exp)
    finally:
        optuna.logging.set_verbosity(verbosity)
    if imp is None:
        sec.blocks.append(why)
        return sec
    sec.blocks.append(
        f"How much of the variance of {exp.metric} each parameter explains, over {n} finished trials "
        "(Optuna's FanovaImportanceEvaluator, seed 0; the importances sum to 1)."
    )
    sec.blocks.append(
        _Table(
            ["rank", "parameter", "importance"],
            [[str(i), p, f"{v:.4f}"] for i, (p, v) in enumerate(imp.items(), start=1)],
        )
    )
    sec.blocks.append(_plot_importances(imp, exp.metric, plots))
    return sec


def _plot_importances(imp: dict[str, float], metric: str, plots: _Plots) -> _Image:
    """Horizontal bars, most important on top."""
    names, values = list(imp)[::-1], list(imp.values())[::-1]
    fig = _figure(6.0, max(2.5, 0.5 * len(names) + 1.2))
    ax = fig.add_subplot()
    bars = ax.barh(names, values, color="tab:blue", edgecolor="black")
    ax.bar_label(bars, labels=[f"{v:.3f}" for v in values], padding=3, fontsize=9)
    ax.set_xlim(0, max(values) * 1.2 if max(values) > 0 else 1)
    ax.set_xlabel(f"fANOVA importance for {metric}")
    ax.grid(axis="x", alpha=0.3)
    fig.suptitle("Parameter importances")
    return plots.save("importances", fig)


def _data_section(exp: _Experiment, plots: _Plots) -> _Section:
    """Label bits H(S|C) of the training set, subclass counts per split, invented-subclass usage."""
    sec = _Section("data", "Data: subclasses and label bits")
    data = exp.data
    if data is None:
        sec.blocks.append("results/data.json is not written yet (the run writes it when it has loaded the data).")
    else:
        bits = data.get("label_bits_train")
        sec.blocks.append(
            f"Source {data.get('source', '?')}, subclasses {data.get('subclasses', '?')}; label bits the subclasses add: "
            f"H(S|C) = {_fmt_metric(bits)} bits per training sample."
        )
        table = _subclass_table(data)
        if table is not None:
            sec.blocks.append(table)
            image = _plot_subclass_counts(data, plots)
            if image is not None:
                sec.blocks.append(image)
    if exp.subclasses is not None:
        sec.blocks.extend(_invented_blocks(exp.subclasses))
    return sec


def _subclass_table(data: dict[str, Any]) -> _Table | None:
    """Subclass | class | count per split, from data.json."""
    names = data.get("subclass_names") or []
    counts = data.get("subclass_counts") or {}
    if not names or not counts:
        return None
    classes = data.get("class_names") or []
    to_class = data.get("subclass_to_class") or []
    splits = [s for s in ("train", "val", "test") if s in counts] + [
        s for s in counts if s not in ("train", "val", "test")
    ]
    rows = []
    for i, name in enumerate(names):
        c = to_class[i] if i < len(to_class) else None
        cls = classes[c] if isinstance(c, int) and c < len(classes) else _fmt(c)
        rows.append([str(name), str(cls)] + [_fmt(counts[s][i]) if i < len(counts[s]) else "-" for s in splits])
    return _Table(["subclass", "class"] + splits, rows)


def _plot_subclass_counts(data: dict[str, Any], plots: _Plots) -> _Image | None:
    """Training-set count per subclass, coloured by class."""
    names = [str(n) for n in data.get("subclass_names") or []]
    counts = (data.get("subclass_counts") or {}).get("train") or []
    if not names or len(counts) != len(names):
        return None
    to_class = data.get("subclass_to_class") or [0] * len(names)
    classes = data.get("class_names") or []
    palette = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive"]
    fig = _figure(max(6.0, 0.45 * len(names) + 2.0), 4.0)
    ax = fig.add_subplot()
    colours = [palette[int(c) % len(palette)] for c in to_class]
    ax.bar(range(len(names)), counts, color=colours, edgecolor="black")
    crowded = sum(len(n) for n in names) > 60  # long names: slant them so they do not overlap
    ax.set_xticks(
        range(len(names)), names, rotation=40 if crowded else 0, ha="right" if crowded else "center", fontsize=8
    )
    from matplotlib.patches import Patch

    seen = sorted(set(int(c) for c in to_class))
    fig.legend(
        handles=[
            Patch(color=palette[c % len(palette)], label=str(classes[c]) if c < len(classes) else str(c)) for c in seen
        ],
        title="class",
        fontsize=8,
        loc="outside right upper",
    )
    ax.set_ylabel("training samples")
    ax.grid(axis="y", alpha=0.3)
    bits = data.get("label_bits_train")
    fig.suptitle(f"Subclass counts (train), H(S|C) = {_fmt_metric(bits)} bits")
    return plots.save("subclass_counts", fig)


def _invented_blocks(sub: dict[str, Any]) -> list[str | _Table]:
    """The usage of invented subclasses (subclasses.json): entropy and dead share per class."""
    blocks: list[str | _Table] = [
        f"Invented subclass usage (scheme {sub.get('scheme', '?')}): how evenly each class uses its subclasses "
        f"(entropy against its maximum) and the share of subclasses no training sample falls in."
    ]
    rows = [
        [
            str(r.get("class", "?")),
            _fmt_metric(r.get("entropy_bits")),
            _fmt_metric(r.get("max_entropy_bits")),
            _fmt_metric(r.get("dead_share")),
        ]
        for r in sub.get("per_class") or []
        if isinstance(r, dict)
    ]
    if rows:
        blocks.append(_Table(["class", "entropy (bits)", "max entropy (bits)", "dead share"], rows))
    ami = sub.get("ami_test")
    blocks.append(
        f"Overall dead share {_fmt_metric(sub.get('dead_share'))}; adjusted mutual information with the "
        f"known subclasses on the test split: {_fmt_metric(ami) if ami is not None else 'not available'}."
    )
    return blocks


# --------------------------------------------------------------------------------------------------
# Rendering


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _to_markdown(exp: _Experiment, sections: list[_Section], plots: _Plots, generated: str) -> str:
    """summary.md: every section, tables as markdown tables, plots as links to the PNGs."""
    out = [f"# skd-tune report: {exp.name}", "", f"Experiment {exp.root}, generated {generated}.", ""]
    for sec in sections:
        out += [f"## {sec.title}", ""]
        for block in sec.blocks:
            if isinstance(block, _Table):
                out.append("| " + " | ".join(_md_cell(h) for h in block.header) + " |")
                out.append("|" + "|".join("---" for _ in block.header) + "|")
                out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows]
            elif isinstance(block, _Image):
                out.append(f"![{block.caption}]({plots.paths[block.key].name})")
            else:
                out.append(block)
            out.append("")
    return "\n".join(out)


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 1100px;
       padding: 0 1rem; color: #222; line-height: 1.45; }
h1 { font-size: 1.6rem; margin-bottom: 0.2rem; } h2 { font-size: 1.25rem; margin-top: 2rem;
       border-bottom: 1px solid #ddd; padding-bottom: 0.2rem; }
p.meta { color: #666; margin-top: 0; } nav a { margin-right: 0.8rem; }
table { border-collapse: collapse; margin: 0.6rem 0; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.6rem; text-align: right; white-space: nowrap; }
th { background: #f3f3f3; } td:first-child, th:first-child, td.w { text-align: left; }
tbody tr:nth-child(even) { background: #fafafa; }
figure { display: inline-block; margin: 0.5rem 1rem 0.5rem 0; vertical-align: top; }
figure img { max-width: 100%; border: 1px solid #eee; } figcaption { color: #666; font-size: 0.85rem; }
"""


def _td_class(cell: str) -> str:
    """Numbers align right (the default in the CSS), words left."""
    return "" if re.fullmatch(r"[-+]?[0-9.]+(e[-+]?[0-9]+)?( ± [0-9.]+)?|-|[0-9]+/[0-9]+", cell) else ' class="w"'


def _to_html(exp: _Experiment, sections: list[_Section], plots: _Plots, generated: str) -> str:
    """index.html: inline CSS, no scripts, no external URLs; the PNGs by relative src."""
    e = html.escape
    out = [
        "<!doctype html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f"<title>skd-tune report: {e(exp.name)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        f"<h1>skd-tune report: {e(exp.name)}</h1>",
        f'<p class="meta">experiment {e(str(exp.root))}, generated {e(generated)}</p>',
        "<nav>" + "".join(f'<a href="#{e(s.anchor)}">{e(s.title.split(":")[0])}</a>' for s in sections) + "</nav>",
    ]
    for sec in sections:
        out.append(f'<section id="{e(sec.anchor)}">')
        out.append(f"<h2>{e(sec.title)}</h2>")
        for block in sec.blocks:
            if isinstance(block, _Table):
                out.append(
                    "<table><thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in block.header) + "</tr></thead><tbody>"
                )
                out += ["<tr>" + "".join(f"<td{_td_class(c)}>{e(c)}</td>" for c in row) + "</tr>" for row in block.rows]
                out.append("</tbody></table>")
            elif isinstance(block, _Image):
                name = plots.paths[block.key].name
                out.append(
                    f'<figure><img src="{e(name)}" alt="{e(block.caption)}"><figcaption>{e(block.caption)}</figcaption></figure>'
                )
            else:
                out.append(f"<p>{e(block)}</p>")
        out.append("</section>")
    out += ["</body>", "</html>", ""]
    return "\n".join(out)


def _to_text(exp: _Experiment, table: pd.DataFrame | None, top: int) -> str:
    """What the CLI prints: progress, the method table (or why there is none) and the top trials."""
    c = _counts(exp)
    lines = [
        f"experiment {exp.name} at {exp.root}: stages done: {', '.join(s for s in STAGES if s in exp.stages) or 'none'}; "
        f"student trials {c['TERMINATED']}/{exp.search.num_samples} terminated, {c['RUNNING']} running, "
        f"{c['ERROR']} errored",
        "",
    ]
    if table is None:
        lines.append(_methods_missing(exp))
    else:
        lines += ["method table (test split, mean ± std over seeds):", format_method_table(table)]
    lines.append("")
    header, rows = _leaderboard_rows(exp, top)
    if not rows:
        lines.append(_no_trial_sentence(exp))
        return "\n".join(lines)
    lines.append(f"top {len(rows)} student trials by {exp.metric} ({exp.search.mode}):")
    params = header[6:]
    grid = [["rank", "trial", exp.metric, "epochs", "status", "params"]]
    for row in rows:
        grid.append(row[:4] + [row[5], ", ".join(f"{p}={v}" for p, v in zip(params, row[6:]))])
    widths = [max(len(r[i]) for r in grid) for i in range(len(grid[0]))]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in grid]
    return "\n".join(lines)


def _write_text_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` via a temporary file and a rename (readers never see half a file)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _prepare_out_dir(out_dir: Path) -> None:
    """Create the output directory, or say in one paragraph why it cannot be."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(
            f"{out_dir}: is a file, not a directory; give --out a directory for the report (it is created if missing)"
        )
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(
            f"{out_dir}: cannot create the report directory ({e.strerror}); give --out a writable directory"
        ) from None


# --------------------------------------------------------------------------------------------------


def build_report(experiment: str | Path, out_dir: str | Path | None = None, top: int = 10) -> Report:
    """Write the report of the experiment directory `experiment` into `out_dir` (default EXPERIMENT/report).

    Writes one PNG per plot, then `summary.md`, then `index.html` (each atomically), and returns their
    paths with the text the CLI prints. Works at any stage of a run. Raises NotAnExperiment when
    `experiment` is not an experiment directory and ResultsError when one of its results files is
    damaged; both with a one-paragraph message naming the file and the fix.
    """
    if top < 1:
        raise UserError(f"top: the leaderboard needs at least 1 trial, got {top}; e.g. --top 10")
    exp = _load_experiment(experiment)
    out = Path(out_dir) if out_dir is not None else exp.root / "report"
    _prepare_out_dir(out)
    plots = _Plots(out)
    table = _methods_table(exp)
    sections = [
        _progress_section(exp),
        _methods_section(exp, table, plots),
        _teacher_section(exp),
        _export_section(exp),
        _leaderboard_section(exp, top),
        _curves_section(exp, top, plots),
        _params_section(exp, plots),
        _importance_section(exp, plots),
        _data_section(exp, plots),
    ]
    generated = time.strftime("%Y-%m-%d %H:%M:%S")
    summary, page = out / "summary.md", out / "index.html"
    _write_text_atomic(summary, _to_markdown(exp, sections, plots, generated))
    _write_text_atomic(page, _to_html(exp, sections, plots, generated))
    return Report(html=page, summary=summary, text=_to_text(exp, table, top), plots=dict(plots.paths))
