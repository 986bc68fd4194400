"""`skd-tune status`: what an experiment holds, read from its files alone (no Ray, no lock).

Safe to run from another terminal while a search runs: the state and the Parquet tables are only ever
replaced atomically, and the driver's lock is not taken.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .experiment import Experiment, best_trial, frozen_spec, trial_counts
from .experiment.results import format_value
from .stages import STAGE_NAMES

__all__ = ["ExperimentStatus", "experiment_status", "format_status"]


@dataclass
class ExperimentStatus:
    root: Path
    name: str
    stages_done: list[str]
    num_samples: int
    counts: dict[str, int] = field(default_factory=dict)
    metric: str = "val_f1"
    best: dict[str, Any] | None = None
    params: list[str] = field(default_factory=list)
    export: dict[str, Any] | None = None
    label_bits: float | None = None
    teacher_bits: dict[str, Any] | None = None  # I_T(S;X|C) of the teacher (the teacher_logits stage's record)
    method_seeds: int = 0
    methods: Any = None  # the method table (pandas), once the method stage is done
    pairs: Any = None  # the paired differences between the methods (pandas)
    searches: dict[str, dict[str, int]] = field(default_factory=dict)  # the KD / no-KD searches, by status
    objectives: list[tuple[str, str]] = field(default_factory=list)  # search.objectives as (metric, mode)
    pareto: Any = None  # the Pareto front (pandas), once the student search wrote it

    @property
    def finished(self) -> bool:
        return "export" in self.stages_done and ("methods" in self.stages_done or self.method_seeds == 0)


def experiment_status(location: str | os.PathLike | Experiment) -> ExperimentStatus:
    """The status of the experiment at `location` (a directory, a URI, or an opened `Experiment`)."""
    exp = location if isinstance(location, Experiment) else Experiment.existing(location)
    spec, state = frozen_spec(exp), exp.state()
    trials = exp.trials("student")
    data = exp.result("data")
    return ExperimentStatus(
        exp.root,
        spec.name,
        [s for s in STAGE_NAMES if state.done(s) is not None],
        spec.search.num_samples,
        counts=trial_counts(trials, spec.search.num_samples),
        metric=spec.search.metric,
        best=best_trial(trials, spec.search.metric, spec.search.mode),
        params=list(spec.search.space),
        export=state.done("export"),
        label_bits=data.get("label_bits_train") if isinstance(data, dict) else None,
        teacher_bits=(state.done("teacher_logits") or {}).get("subclass_bits"),
        method_seeds=spec.methods.seeds,
        methods=exp.result("method_summary") if state.done("methods") is not None else None,
        pairs=exp.result("method_pairs") if state.done("methods") is not None else None,
        searches={
            f"{method} search": trial_counts(exp.trials(table), 0)
            for method, table in (("KD", "search_kd"), ("no-KD", "search_nokd"))
            if exp.trials(table) is not None
        },
        objectives=[(o.metric, o.mode) for o in spec.search.objectives],
        pareto=exp.result("pareto") if spec.search.objectives else None,
    )


def format_status(st: ExperimentStatus, resume_cmd: str | None = None) -> str:
    lines = [f"experiment {st.name} at {st.root}"]
    lines.append("stages: " + ", ".join(f"{s} {'done' if s in st.stages_done else '-'}" for s in STAGE_NAMES))
    c = st.counts
    lines.append(
        f"student trials: {c['TERMINATED']}/{st.num_samples} terminated, {c['RUNNING']} running, "
        f"{c['PENDING']} pending, {c['ERROR']} errored"
    )
    for name, counts in st.searches.items():
        lines.append(
            f"{name} trials: {counts['TERMINATED']} terminated, {counts['RUNNING']} running, {counts['ERROR']} errored"
        )
    if st.label_bits is not None:
        lines.append(f"label bits the subclasses add: H(S|C) = {st.label_bits:.3f} bits per training sample")
    if st.teacher_bits is not None:
        lines.append(
            f"what the teacher's subclass probabilities carry beyond its class probabilities: I_T(S;X|C) = "
            f"{st.teacher_bits['bits']:.3f} bits per training sample"
        )
    if st.best is not None:
        params = ", ".join(f"{p}={format_value(st.best.get(p))}" for p in st.params)
        lines.append(
            f"best so far: {st.best['trial_id']} {st.metric} {st.best[f'best_{st.metric}']:.4f} "
            f"(epoch {int(st.best['best_epoch'])}){': ' + params if params else ''}"
        )
    if st.objectives:
        lines += _front_lines(st)
    if st.export:
        t = st.export.get("test_metrics", {})
        lines.append(f"exported: {st.root / st.export.get('path', 'export')} (test f1 {t.get('f1', float('nan')):.4f})")
    if st.methods is not None:
        from .methods import format_method_table

        lines.append("method table (test split, mean ± std over seeds):")
        lines.append(format_method_table(st.methods, st.pairs))
    if not st.finished:
        lines.append(f"not finished; resume with: {resume_cmd or 'skd-tune run ' + str(st.root)}")
    return "\n".join(lines)


def _front_lines(st: ExperimentStatus) -> list[str]:
    """The Pareto front, one line per trial: its id, every objective's value and its searched parameters."""
    from .experiment.layout import results_file
    from .pareto import format_objective, objective_column

    labels = ", ".join(f"{m} {mode}" for m, mode in st.objectives)
    if st.pareto is None:
        return [f"Pareto front ({labels}): not yet ({results_file('pareto')} is written when the student search ends)"]
    n = len(st.pareto)
    lines = [f"Pareto front ({labels}): {n} trial{'s' if n != 1 else ''}, from {results_file('pareto')}"]
    for rec in st.pareto.to_dict("records"):
        values = ", ".join(f"{m} {format_objective(m, rec.get(objective_column(m)))}" for m, _ in st.objectives)
        params = ", ".join(f"{p}={format_value(rec.get(p))}" for p in st.params if p in rec)
        lines.append(f"  {rec.get('trial_id')}: {values}{'; ' + params if params else ''}")
    return lines
