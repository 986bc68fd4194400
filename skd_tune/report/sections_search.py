"""The sections of the report about the search space and the data: the search metric against each
searched parameter, fANOVA parameter importances (Optuna's evaluator on an in-memory study of the
finished trials), and the data (label bits H(S|C), subclass counts, usage of invented subclasses).
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..spec import Distribution
from .load import Loaded, file_name
from .plots import Plots, plot_importances, plot_param, plot_subclass_counts
from .render import Section, Table, fmt, fmt_metric, is_num
from .sections import no_trial_sentence

if TYPE_CHECKING:
    from optuna import Study

__all__ = ["MIN_TRIALS_FOR_IMPORTANCE", "data_section", "importance_section", "params_section"]

MIN_TRIALS_FOR_IMPORTANCE = 3  # fANOVA on fewer finished trials says nothing
SPLITS = ("train", "val", "test")


def _safe(name: str) -> str:
    """A parameter name as a file-name part: `curriculum.pacing` -> `curriculum_pacing`."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name)


def params_section(ld: Loaded, plots: Plots) -> Section:
    """The search metric against each searched parameter (scatter, or box plots for choices)."""
    sec = Section("parameters", f"{ld.metric} against the searched parameters")
    if not ld.search.space:
        sec.blocks.append("No parameter is searched (search.space is empty).")
        return sec
    if ld.ranked.empty:
        sec.blocks.append(no_trial_sentence(ld))
        return sec
    sec.blocks.append("Each point is a trial's best epoch; the star marks the best trial. Choices are box plots.")
    for name in ld.params:
        image = plot_param(ld, name, ld.search.space[name], f"param_{_safe(name)}", plots)
        if image is not None:
            sec.blocks.append(image)
    return sec


# --------------------------------------------------------------------------------------------------
# Parameter importances


def _param_value(value: Any, dist: Distribution) -> Any:
    """A trials-table cell as the Python value its Optuna distribution holds (None: not usable)."""
    if value is None or value is pd.NA or (is_num(value) and math.isnan(float(value))):
        return None
    value = value.item() if isinstance(value, np.generic) else value
    if dist.kind == "choice":
        return next((c for c in dist.choice or [] if c == value or str(c) == str(value)), None)
    if dist.kind == "int":
        return int(value)
    return float(value)


def _study(ld: Loaded) -> Study:
    """An in-memory Optuna study of the finished trials whose parameters lie in the current space."""
    import optuna

    done = ld.ranked
    done = done[done["status"].astype(str) == "TERMINATED"] if "status" in done else done
    space = {p: ld.search.space[p] for p in ld.params}
    dists = {p: dist.to_optuna() for p, dist in space.items()}
    study = optuna.create_study(direction="maximize" if ld.mode == "max" else "minimize")
    for rec in done.to_dict("records"):
        values = {p: _param_value(rec.get(p), dist) for p, dist in space.items()}
        if any(v is None for v in values.values()):
            continue  # a trial whose parameter is outside the current space cannot join the study
        try:
            study.add_trial(
                optuna.trial.create_trial(params=values, distributions=dists, value=float(rec[ld.best_col]))
            )
        except ValueError:
            continue  # a value outside its distribution (the space was edited after the trial ran)
    return study


def _importances(ld: Loaded, study: Study) -> tuple[dict[str, float] | None, str]:
    """fANOVA importances over the study's trials: (importances or None, the sentence why not)."""
    import optuna

    n = len(study.trials)
    if n < MIN_TRIALS_FOR_IMPORTANCE:
        return (
            None,
            f"Parameter importances need at least {MIN_TRIALS_FOR_IMPORTANCE} finished trials; {n} finished so far.",
        )
    if np.ptp([t.value for t in study.trials]) == 0:
        return None, f"All {n} finished trials have the same {ld.metric}, so no parameter explains anything."
    try:
        imp = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0)
        )
    except RuntimeError as e:  # fANOVA's "zero total variance": the forest found nothing to explain
        return None, f"fANOVA could not rank the parameters ({e})."
    if not imp:
        return None, "No searched parameter takes more than one value, so there are no importances."
    return {k: float(v) for k, v in imp.items()}, ""


def importance_section(ld: Loaded, plots: Plots) -> Section:
    """Parameter importances: a table and Optuna's bar chart (or the sentence why there are none)."""
    import optuna

    sec = Section("importances", "Parameter importances (fANOVA)")
    if not ld.params:
        sec.blocks.append("No parameter is searched, so there are no importances.")
        return sec
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = _study(ld)
        imp, why = _importances(ld, study)
        if imp is None:
            sec.blocks.append(why)
            return sec
        image = plot_importances(study, ld.metric, plots)
    finally:
        optuna.logging.set_verbosity(verbosity)
    sec.blocks.append(
        f"How much of the variance of {ld.metric} each parameter explains, over {len(study.trials)} finished trials "
        "(Optuna's FanovaImportanceEvaluator, seed 0; the importances sum to 1)."
    )
    rows = [[str(i), p, f"{v:.4f}"] for i, (p, v) in enumerate(imp.items(), start=1)]
    sec.blocks += [Table(["rank", "parameter", "importance"], rows), image]
    return sec


# --------------------------------------------------------------------------------------------------
# The data


def data_section(ld: Loaded, plots: Plots) -> Section:
    """Label bits H(S|C) of the training set, subclass counts per split, invented-subclass usage."""
    sec = Section("data", "Data: subclasses and label bits")
    data = ld.data
    if data is None:
        sec.blocks.append(f"{file_name('data')} is not written yet (the run writes it when it has loaded the data).")
    else:
        sec.blocks.append(
            f"Source {data.get('source', '?')}, subclasses {data.get('subclasses', '?')}; label bits the subclasses add: "
            f"H(S|C) = {fmt_metric(data.get('label_bits_train'))} bits per training sample (over train + val)."
        )
    teacher_bits = (ld.done("teacher_logits") or {}).get("subclass_bits")
    if teacher_bits is not None:
        per_class = ", ".join(f"{c} {fmt_metric(v)}" for c, v in teacher_bits["per_class"].items())
        sec.blocks.append(
            f"What the teacher's subclass probabilities carry beyond its class probabilities (what subclass "
            f"distillation can transfer and class distillation cannot): I_T(S;X|C) = {fmt_metric(teacher_bits['bits'])} "
            f"bits per training sample ({per_class}; at most {fmt_metric(teacher_bits['max_bits'])} with its outputs)."
        )
    if data is not None:
        table = _subclass_table(data)
        if table is not None:
            sec.blocks.append(table)
            image = plot_subclass_counts(data, plots)
            if image is not None:
                sec.blocks.append(image)
    if ld.subclasses is not None:
        sec.blocks.extend(_invented_blocks(ld.subclasses))
    return sec


def _subclass_table(data: dict[str, Any]) -> Table | None:
    """Subclass | class | count per split, from the data summary."""
    names = data.get("subclass_names") or []
    counts = data.get("subclass_counts") or {}
    if not names or not counts:
        return None
    classes = data.get("class_names") or []
    to_class = data.get("subclass_to_class") or []
    splits = [s for s in SPLITS if s in counts] + [s for s in counts if s not in SPLITS]
    rows = []
    for i, name in enumerate(names):
        c = to_class[i] if i < len(to_class) else None
        cls = classes[c] if isinstance(c, int) and c < len(classes) else fmt(c)
        rows.append([str(name), str(cls)] + [fmt(counts[s][i]) if i < len(counts[s]) else "-" for s in splits])
    return Table(["subclass", "class"] + splits, rows)


def _invented_blocks(sub: dict[str, Any]) -> list[str | Table]:
    """The usage of invented subclasses: entropy and dead share per class."""
    blocks: list[str | Table] = [
        f"Invented subclass usage (scheme {sub.get('scheme', '?')}): how evenly each class uses its subclasses "
        f"(entropy against its maximum) and the share of subclasses no training sample falls in."
    ]
    keys = ("entropy_bits", "max_entropy_bits", "dead_share")
    rows = [
        [str(r.get("class", "?"))] + [fmt_metric(r.get(k)) for k in keys]
        for r in sub.get("per_class") or []
        if isinstance(r, dict)
    ]
    if rows:
        blocks.append(Table(["class", "entropy (bits)", "max entropy (bits)", "dead share"], rows))
    ami = sub.get("ami_test")
    blocks.append(
        f"Overall dead share {fmt_metric(sub.get('dead_share'))}; adjusted mutual information with the "
        f"known subclasses on the test split: {fmt_metric(ami) if ami is not None else 'not available'}."
    )
    return blocks
