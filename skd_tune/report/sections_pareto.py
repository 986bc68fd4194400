"""The report's Pareto front (a spec with `search.objectives`; none without): the front's table and, for
each objective after the first, a plot of the first objective against it.

The front is `results/pareto.parquet`, which the student stage writes when the search ends; before
that, the front of the trials so far (`pareto.pareto_front` of the trials table, the same definition).
In a plot, every trial with both values is a point: the finished trials off the front grey, the trials
that did not finish all their epochs (stopped early by ASHA, running, errored: never on the front) light
grey crosses, the front highlighted and joined by a step line (with more than two objectives, the line
joins the front points that are also non-dominated in the two plotted objectives), and the best trial
by the first objective alone (the exported one) starred.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from ..names import COST_METRICS
from ..pareto import finished, format_objective, missing_columns, non_dominated, objective_column, pareto_front
from .load import Loaded, file_name
from .plots import Plots, _figure, _finish, _log_axis
from .render import Image, Section, Table, epochs_cell, fmt
from .sections import no_trial_sentence

__all__ = ["pareto_section", "plot_pareto"]

FRONT_COLOUR, DOMINATED_COLOUR, UNFINISHED_COLOUR = "tab:red", "0.45", "0.78"


def _objectives(ld: Loaded) -> list[tuple[str, str]]:
    return [(o.metric, o.mode) for o in ld.search.objectives]


def pareto_section(ld: Loaded, plots: Plots) -> Section:
    """The front's table (trial, every objective, epochs, best epoch, parameters) and its plots."""
    objectives = _objectives(ld)
    labels = ", ".join(f"{m} {mode}" for m, mode in objectives)
    sec = Section("pareto", f"Pareto front: {labels}")
    trials = ld.trials
    if trials is None or trials.empty:
        sec.blocks.append(no_trial_sentence(ld))
        return sec
    front = ld.pareto
    source = f"from {file_name('pareto')}"
    if front is None:
        front = pareto_front(trials, objectives)
        source = f"so far, from {file_name('trials')} ({file_name('pareto')} is written when the student search ends)"
    done = finished(trials)
    sec.blocks.append(
        f"The trials that finished all their epochs ({int(done.sum())} of {len(trials)}) and that no other finished "
        f"trial beats: none is as good in every objective ({labels}) and better in one. {len(front)} on the front, "
        f"{source}, sorted by {', '.join(m for m, _ in objectives[1:])}."
    )
    early = int(((trials["status"].astype(str) == "TERMINATED") & ~done).sum()) if "status" in trials else 0
    if ld.search.scheduler.name == "asha":
        sec.blocks.append(
            f"ASHA stopped {early} trial(s) early on {objectives[0][0]} alone; they are not on the front "
            "(search.scheduler: fifo trains every trial to the end)."
        )
    missing = missing_columns(trials, objectives)
    if missing:
        sec.blocks.append(
            f"{file_name('trials')} has no {', '.join(missing)} column: no trial reported it, so no trial is on the front."
        )
    if len(front):
        params = [p for p in ld.params if p in front]
        header = ["trial", *(m for m, _ in objectives), "epochs", "best epoch", *params]
        rows = [
            [str(rec.get("trial_id"))]
            + [format_objective(m, rec.get(objective_column(m))) for m, _ in objectives]
            + [epochs_cell(rec), fmt(rec.get("best_epoch"))]
            + [fmt(rec.get(p)) for p in params]
            for rec in front.to_dict("records")
        ]
        sec.blocks.append(Table(header, rows))
    images = [plot_pareto(ld, front, objectives, metric, plots) for metric, _ in objectives[1:]]
    if any(images):
        more = (
            " With more than two objectives, a trial on the front can look dominated in one plot: it is better in "
            "an objective that plot does not show; the step line joins the front trials that are not."
            if len(objectives) > 2
            else ""
        )
        sec.blocks.append(
            f"Grey: finished trials off the front; light grey crosses: trials that did not finish all their epochs; "
            f"the star: the best trial by {objectives[0][0]} alone (the one exported).{more}"
        )
        sec.blocks.extend(image for image in images if image is not None)
    return sec


def _numbers(trials: pd.DataFrame, metric: str) -> np.ndarray:
    col = objective_column(metric)
    if col not in trials:
        return np.full(len(trials), np.nan)
    return pd.to_numeric(trials[col], errors="coerce").astype(float).to_numpy()


def plot_pareto(
    ld: Loaded, front: pd.DataFrame, objectives: list[tuple[str, str]], x_metric: str, plots: Plots
) -> Image | None:
    """The first objective against `x_metric`, saved as `pareto_<x_metric>`; None when no trial has both."""
    trials = ld.trials
    (y_metric, y_mode), x_mode = objectives[0], dict(objectives)[x_metric]
    x, y = _numbers(trials, x_metric), _numbers(trials, y_metric)
    ok = np.isfinite(x) & np.isfinite(y)
    if not ok.any():
        return None
    ids = trials["trial_id"].astype(str).to_numpy()
    front_ids = set(front["trial_id"].astype(str)) if "trial_id" in front else set()
    on_front = ok & np.isin(ids, list(front_ids))
    done = finished(trials).to_numpy()
    fig = _figure(6.4, 4.2)
    ax = fig.add_subplot()
    groups = (
        (ok & ~done & ~on_front, {"marker": "x", "color": UNFINISHED_COLOUR, "label": "did not finish its epochs"}),
        (ok & done & ~on_front, {"color": DOMINATED_COLOUR, "alpha": 0.8, "label": "dominated"}),
    )
    for mask, style in groups:
        if mask.any():
            ax.scatter(x[mask], y[mask], s=22, zorder=2, **style)
    if on_front.any():
        ax.scatter(
            x[on_front], y[on_front], s=40, color=FRONT_COLOUR, edgecolor="black", zorder=4, label="Pareto front"
        )
        fx, fy = x[on_front], y[on_front]
        keep = non_dominated(np.column_stack([fx, fy]), [x_mode, y_mode])  # the staircase of these two
        order = np.argsort(fx[keep], kind="stable")
        where = "post" if x_mode == "min" else "pre"
        ax.step(fx[keep][order], fy[keep][order], where=where, color=FRONT_COLOUR, linewidth=1.2, zorder=3)
    best = ld.best_id()
    star = ok & (ids == best)
    if star.any():
        style = {"marker": "*", "s": 220, "color": "gold", "edgecolor": "black", "zorder": 5}
        ax.scatter(x[star], y[star], label=f"best {y_metric} alone ({best})", **style)
    xs = x[ok]
    if x_metric in COST_METRICS and (xs > 0).all() and xs.max() >= 20 * xs.min():
        _log_axis(ax)
    ax.legend(fontsize=8)
    _finish(fig, ax, f"{y_metric} against {x_metric}", f"{x_metric} ({x_mode})", f"best {y_metric} ({y_mode})")
    return plots.save(f"pareto_{re.sub(r'[^A-Za-z0-9_-]+', '_', x_metric)}", fig)
