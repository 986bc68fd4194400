"""The report's PNGs (matplotlib; imported when a plot is drawn).

Figures use matplotlib's object API (no pyplot, no global backend), except the parameter importances,
drawn by `optuna.visualization.matplotlib.plot_param_importances` on the study the importances come
from: it draws with pyplot and a style sheet, so it runs inside `rc_context` and its figure is closed.
The other plots are the report's own, because Optuna's would show something else: the optimisation
history here includes running and errored trials (coloured by status) in the order they started, the
parameter plots mark the best trial and show choices as box plots, and the learning curves come from
the epochs table (the in-memory study has no intermediate values). Each PNG is written atomically.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..atomic import write_atomic
from ..spec import Distribution
from .load import Loaded
from .render import Image, fmt, fmt_metric

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from optuna import Study

__all__ = [
    "Plots",
    "plot_curves",
    "plot_history",
    "plot_importances",
    "plot_methods",
    "plot_param",
    "plot_subclass_counts",
]

DPI = 100
STATUS_COLOURS = {"TERMINATED": "tab:blue", "RUNNING": "tab:orange", "ERROR": "tab:red", "PAUSED": "tab:gray"}
METHOD_COLOURS = {"teacher": "tab:gray", "no-KD": "tab:red", "KD": "tab:orange", "SKD": "tab:green"}
PALETTE = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive"]


class Plots:
    """Where the PNGs go and which were written (name -> path)."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.paths: dict[str, Path] = {}

    def save(self, key: str, fig: Figure, caption: str | None = None) -> Image:
        """Write `fig` as `<key>.png` atomically and register it; returns the block that shows it."""
        path = write_atomic(self.out_dir / f"{key}.png", lambda f: fig.savefig(f, format="png", dpi=DPI))
        self.paths[key] = path
        return Image(key, caption or fig.get_suptitle() or key)


def _figure(width: float = 7.0, height: float = 4.2) -> Figure:
    """A matplotlib Figure of the object API (no pyplot, no global backend)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _finish(fig: Figure, ax: Axes, title: str, xlabel: str | None, ylabel: str, grid: str = "both") -> None:
    """Axis labels, a light grid and the title (the PNG's caption)."""
    if xlabel is not None:
        ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(axis=grid, alpha=0.3)
    fig.suptitle(title)


def _integer_x(ax: Axes) -> None:
    """Integer ticks on the x axis (epochs, trial numbers)."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _log_axis(ax: Axes) -> None:
    """Log x axis with plain tick labels at 1, 2, 5 x 10^k (readable over one or two decades)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


# --------------------------------------------------------------------------------------------------


def plot_methods(table: pd.DataFrame, plots: Plots) -> Image | None:
    """Bar chart of the mean test F1 per method with its 95% interval; the teacher as a hatched bar."""
    rows = table[table["f1_mean"].notna()]
    if rows.empty:
        return None
    fig = _figure(6.0, 4.0)
    ax = fig.add_subplot()
    names = rows["method"].tolist()
    means = rows["f1_mean"].to_numpy(float)
    stds = np.nan_to_num(means - rows["f1_ci_low"].to_numpy(float))  # half-widths of the intervals
    colours = [METHOD_COLOURS.get(m, "tab:blue") for m in names]
    bars = ax.bar(names, means, yerr=stds, capsize=6, color=colours, edgecolor="black")
    for bar, method in zip(bars, names):
        if method == "teacher":
            bar.set_hatch("//")
    ax.bar_label(bars, labels=[f"{m:.4f}" for m in means], padding=3, fontsize=9)
    low, high = float(np.min(means - stds)), float(np.max(means + stds))
    span = max(high - low, 0.02)
    ax.set_ylim(max(0.0, low - 0.5 * span), high + 0.35 * span)  # zoomed in: the differences are small
    _finish(fig, ax, "Test F1 per method", None, "test F1 (mean, 95% CI over seeds)", grid="y")
    return plots.save("methods", fig)


def plot_pairs(runs: pd.DataFrame, plots: Plots) -> Image | None:
    """Each pair's paired test F1 differences seed by seed (a − b, F1 points), with their mean and 95% interval."""
    from ..methods import PAIRS
    from ..statistics import mean_interval

    done = runs[runs["status"] == "TERMINATED"] if "status" in runs else runs
    if done.empty:
        return None
    by_seed = done.pivot_table(index="seed", columns="method", values="test_f1", aggfunc="first")
    pairs = [(a, b) for a, b in PAIRS if a in by_seed and b in by_seed]
    if not pairs:
        return None
    fig = _figure(6.0, 3.8)
    ax = fig.add_subplot()
    for i, (a, b) in enumerate(pairs):
        d = (by_seed[a] - by_seed[b]).dropna().to_numpy(float) * 100
        ax.scatter(np.full(len(d), i - 0.1), d, color="tab:blue", alpha=0.7, label="a seed" if i == 0 else None)
        iv = mean_interval(d)
        if iv.n >= 2:
            err = [[iv.mean - iv.low], [iv.high - iv.mean]]
            ax.errorbar(
                i + 0.15, iv.mean, yerr=err, fmt="D", color="black", capsize=5, label="mean, 95% CI" if i == 0 else None
            )
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(pairs)), [f"{a} − {b}" for a, b in pairs])
    ax.legend(fontsize=8)
    _finish(fig, ax, "Paired test F1 differences, seed by seed", None, "F1 points", grid="y")
    return plots.save("pairs", fig)


def plot_curves(ld: Loaded, trial_ids: list[str], plots: Plots) -> Image | None:
    """Validation metric per epoch of the given trials (best first in the legend)."""
    ep = ld.epochs
    if ep is None or ep.empty or ld.metric not in ep or "epoch" not in ep:
        return None
    fig = _figure()
    ax = fig.add_subplot()
    drawn = 0
    for trial_id in trial_ids:
        mine = ep[ep["trial_id"] == trial_id].sort_values("epoch")
        if len(mine):
            ax.plot(mine["epoch"], mine[ld.metric].astype(float), marker="o", markersize=3, label=str(trial_id))
            drawn += 1
    if not drawn:
        return None
    _integer_x(ax)
    ax.legend(fontsize=8, ncols=2 if drawn > 5 else 1, title="trial (best first)", title_fontsize=8)
    _finish(fig, ax, f"Learning curves of the top {drawn} trials", "epoch", ld.metric)
    return plots.save("learning_curves", fig)


def _start_order(ld: Loaded) -> pd.DataFrame:
    """The reported trials in the order they started (their first epoch's end: `epoch_end`, sub-second, or
    Ray's whole-second `timestamp` in tables written before it; ties by trial id)."""
    ep = ld.epochs
    df = ld.ranked.copy()
    column = next((c for c in ("epoch_end", "timestamp") if ep is not None and c in ep), None)
    if column is not None and not ep.empty:
        first = ep.groupby("trial_id")[column].min()
        df["_start"] = df["trial_id"].map(first).astype(float)
    else:
        df["_start"] = np.nan
    return df.sort_values(["_start", "trial_id"], kind="stable", na_position="last").reset_index(drop=True)


def plot_history(ld: Loaded, plots: Plots) -> Image:
    """Each trial's best metric in the order the trials started, coloured by status, with the running best."""
    df = _start_order(ld)
    values = df[ld.best_col].to_numpy(float)
    order = np.arange(1, len(df) + 1)
    best = np.fmax.accumulate(values) if ld.mode == "max" else np.fmin.accumulate(values)
    fig = _figure()
    ax = fig.add_subplot()
    statuses = df.get("status", pd.Series(["TERMINATED"] * len(df))).astype(str).to_numpy()
    for status in sorted(set(statuses)):
        mask = statuses == status
        ax.scatter(
            order[mask], values[mask], color=STATUS_COLOURS.get(status, "tab:purple"), label=status.lower(), zorder=3
        )
    ax.step(order, best, where="post", color="black", linewidth=1.5, label=f"best so far ({ld.mode})")
    _integer_x(ax)
    ax.legend(fontsize=8)
    _finish(fig, ax, "Optimisation history", "trial, in the order trials started", f"best {ld.metric} of the trial")
    return plots.save("history", fig)


def plot_param(ld: Loaded, name: str, dist: Distribution, key: str, plots: Plots) -> Image | None:
    """The search metric against one searched parameter: a scatter (log x for loguniform) with the
    best trial starred, or box plots per choice; saved as `key`."""
    draw = _draw_choice if dist.kind == "choice" else _draw_numeric
    fig = _figure(6.0, 4.0)
    ax = fig.add_subplot()
    xlabel = draw(ld, name, dist, fig, ax)
    if xlabel is None:
        return None
    _finish(
        fig,
        ax,
        f"{ld.metric} against {name}",
        xlabel,
        f"best {ld.metric}",
        grid="y" if dist.kind == "choice" else "both",
    )
    return plots.save(key, fig)


def _draw_numeric(ld: Loaded, name: str, dist: Distribution, fig: Figure, ax: Axes) -> str | None:
    """Scatter of the metric against a numeric parameter; returns the x label (None: nothing to draw)."""
    ranked = ld.ranked
    x = pd.to_numeric(ranked[name], errors="coerce").to_numpy(float)
    y = ranked[ld.best_col].to_numpy(float)
    ok = np.isfinite(x)
    if not ok.any():
        return None
    ax.scatter(x[ok], y[ok], alpha=0.8, edgecolor="black", linewidth=0.5, zorder=3)
    best_id = ld.best_id()
    star = ok & (ranked["trial_id"].astype(str) == best_id).to_numpy()
    if star.any():
        style = {"marker": "*", "s": 220, "color": "gold", "edgecolor": "black", "zorder": 4}
        ax.scatter(x[star], y[star], label=f"best ({best_id})", **style)
        fig.legend(loc="outside lower right", fontsize=8, frameon=False)
    log = dist.kind == "loguniform"
    if log:
        _log_axis(ax)
    low, high = getattr(dist, dist.kind)
    if low < high:
        pad = 0.0 if log else 0.03 * (high - low)
        ax.set_xlim(low / 1.1 if log else low - pad, high * 1.1 if log else high + pad)
    return f"{name} ({dist.kind} [{fmt(low)}, {fmt(high)}])"


def _draw_choice(ld: Loaded, name: str, dist: Distribution, fig: Figure, ax: Axes) -> str | None:
    """Box plot of the metric per choice, the trials as jittered points; returns the x label."""
    values = ld.ranked[name].astype(str).to_numpy()
    y = ld.ranked[ld.best_col].to_numpy(float)
    choices = [str(c) for c in dist.choice or []]
    choices += sorted(set(values) - set(choices) - {"None", "nan", "<NA>"})
    groups = [(c, y[values == c]) for c in choices if (values == c).any()]
    if not groups:
        return None
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
    return name


def plot_importances(study: Study, metric: str, plots: Plots) -> Image:
    """Optuna's importance bars (fANOVA, seed 0: the evaluator of the table) of the finished trials."""
    import matplotlib
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization.matplotlib import plot_param_importances

    with matplotlib.rc_context(), warnings.catch_warnings():  # optuna sets a style sheet: kept to this plot
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
        fig = plot_param_importances(study, evaluator=evaluator, target_name=metric).figure
        try:
            fig.set_size_inches(6.4, max(3.0, 0.5 * len(study.trials[0].params) + 1.6))
            fig.set_layout_engine("constrained")
            return plots.save("importances", fig, "Parameter importances")
        finally:
            plt.close(fig)


def plot_subclass_counts(data: dict[str, Any], plots: Plots) -> Image | None:
    """Training-set count per subclass, coloured by class."""
    names = [str(n) for n in data.get("subclass_names") or []]
    counts = (data.get("subclass_counts") or {}).get("train") or []
    if not names or len(counts) != len(names):
        return None
    from matplotlib.patches import Patch

    to_class = data.get("subclass_to_class") or [0] * len(names)
    classes = data.get("class_names") or []
    fig = _figure(max(6.0, 0.45 * len(names) + 2.0), 4.0)
    ax = fig.add_subplot()
    ax.bar(range(len(names)), counts, color=[PALETTE[int(c) % len(PALETTE)] for c in to_class], edgecolor="black")
    crowded = sum(len(n) for n in names) > 60  # long names: slant them so they do not overlap
    ax.set_xticks(
        range(len(names)), names, rotation=40 if crowded else 0, ha="right" if crowded else "center", fontsize=8
    )
    handles = [
        Patch(color=PALETTE[c % len(PALETTE)], label=str(classes[c]) if c < len(classes) else str(c))
        for c in sorted(set(int(c) for c in to_class))
    ]
    fig.legend(handles=handles, title="class", fontsize=8, loc="outside right upper")
    title = f"Subclass counts (train), H(S|C) = {fmt_metric(data.get('label_bits_train'))} bits"
    _finish(fig, ax, title, None, "training samples", grid="y")
    return plots.save("subclass_counts", fig)
