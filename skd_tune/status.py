"""`skd-tune status`: what an experiment directory holds, read from its files alone (no Ray).

Safe to run from another terminal while a search runs: state.json and the Parquet tables are only
ever replaced atomically.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import NotAnExperiment
from .results import read_table
from .spec import Spec

__all__ = ["ExperimentStatus", "NotAnExperiment", "experiment_status", "format_status"]

STAGES = ("teacher", "teacher_logits", "student", "export", "methods")


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
    method_seeds: int = 0
    methods: Any = None  # results/methods_summary.parquet (pandas), once the method stage is done

    @property
    def finished(self) -> bool:
        return "export" in self.stages_done and ("methods" in self.stages_done or self.method_seeds == 0)


def experiment_status(path: str | Path) -> ExperimentStatus:
    root = Path(path)
    spec_file, state_file = root / "spec.yaml", root / "state.json"
    if not root.is_dir():
        raise NotAnExperiment(f"{root}: no such directory; give the experiment directory, e.g. runs/digits-skd")
    if not spec_file.exists() or not state_file.exists():
        raise NotAnExperiment(f"{root}: not an skd-tune experiment (spec.yaml or state.json is missing)")
    try:
        spec = Spec.model_validate(yaml.safe_load(spec_file.read_text()))
        state = json.loads(state_file.read_text())
    except (yaml.YAMLError, json.JSONDecodeError, ValueError) as e:
        raise NotAnExperiment(f"{root}: spec.yaml or state.json is damaged ({str(e).splitlines()[0]})") from None
    stages = [s for s in STAGES if s in state.get("stages", {})]
    status = ExperimentStatus(
        root,
        spec.name,
        stages,
        spec.search.num_samples,
        metric=spec.search.metric,
        params=list(spec.search.space),
        export=state["stages"].get("export"),
        method_seeds=spec.methods.seeds,
    )
    try:
        trials = read_table(root / "results" / "trials.parquet")
    except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid / ArrowIOError for a damaged file
        raise NotAnExperiment(
            f"{root / 'results' / 'trials.parquet'}: cannot be read ({e}); delete it and "
            "resume the run to rebuild it from the Ray Tune experiment"
        ) from None
    counts = {"TERMINATED": 0, "RUNNING": 0, "ERROR": 0, "PENDING": 0}
    if trials is not None and not trials.empty:
        for st, n in trials["status"].value_counts().items():
            counts[st] = counts.get(st, 0) + int(n)
        col = f"best_{spec.search.metric}"
        if col in trials and trials[col].notna().any():
            pos = trials[col].idxmax() if spec.search.mode == "max" else trials[col].idxmin()
            status.best = trials.loc[pos].to_dict()
    data_json = root / "results" / "data.json"
    if data_json.exists():
        try:
            status.label_bits = json.loads(data_json.read_text())["label_bits_train"]
        except (ValueError, KeyError):
            status.label_bits = None
    if "methods" in stages:
        try:
            status.methods = read_table(root / "results" / "methods_summary.parquet")
        except (OSError, ValueError):
            status.methods = None  # the table is shown by `skd-tune report`, which names a damaged file
    known = sum(counts.values())
    counts["PENDING"] += max(spec.search.num_samples - known, 0)
    status.counts = counts
    return status


def format_status(st: ExperimentStatus, resume_cmd: str | None = None) -> str:
    lines = [f"experiment {st.name} at {st.root}"]
    lines.append("stages: " + ", ".join(f"{s} {'done' if s in st.stages_done else '-'}" for s in STAGES))
    c = st.counts
    lines.append(
        f"student trials: {c['TERMINATED']}/{st.num_samples} terminated, {c['RUNNING']} running, "
        f"{c['PENDING']} pending, {c['ERROR']} errored"
    )
    if st.label_bits is not None:
        lines.append(f"label bits the subclasses add: H(S|C) = {st.label_bits:.4f} bits per training sample")
    if st.best is not None:
        params = ", ".join(
            f"{p}={st.best.get(p):.4g}" if isinstance(st.best.get(p), float) else f"{p}={st.best.get(p)}"
            for p in st.params
        )
        lines.append(
            f"best so far: {st.best['trial_id']} {st.metric} {st.best[f'best_{st.metric}']:.4f} (epoch {int(st.best['best_epoch'])}){': ' + params if params else ''}"
        )
    if st.export:
        t = st.export.get("test_metrics", {})
        lines.append(f"exported: {st.root / st.export.get('path', 'export')} (test f1 {t.get('f1', float('nan')):.4f})")
    if st.methods is not None:
        from .methods import format_method_table

        lines.append("method table (test split, mean ± std over seeds):")
        lines.append(format_method_table(st.methods))
    if not st.finished:
        lines.append(f"not finished; resume with: {resume_cmd or 'skd-tune run ' + str(st.root)}")
    return "\n".join(lines)
