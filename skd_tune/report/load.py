"""What the report reads: one experiment, through the experiment package only.

`load` opens the experiment (`Experiment.existing`), its frozen spec (`frozen_spec`), its state and every
results table and file there is so far; each is None until the run writes it, so the report works at any
stage of a run. The file names the report's sentences mention come from the experiment's layout too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import pandas as pd

from ..errors import ResultsError
from ..experiment import Experiment, State, best_trial, frozen_spec, trial_counts
from ..experiment.layout import results_file, table_files
from ..spec import SearchSpec, Spec
from ..stages import STAGE_NAMES

__all__ = ["Loaded", "file_name", "load"]


def file_name(kind: str, table: str = "student") -> str:
    """The experiment-relative name of a results file, for a sentence: `kind` is a `result` kind (data,
    subclasses, method_runs, method_summary, pareto) or a table's file (trials, epochs) of `table`."""
    return table_files(table)[kind] if kind in ("trials", "epochs") else results_file(kind)


@dataclass
class Loaded:
    """The experiment as the report sees it (None: that file is not written yet)."""

    exp: Experiment
    spec: Spec
    state: State
    trials: pd.DataFrame | None = None
    epochs: pd.DataFrame | None = None
    teacher_trials: pd.DataFrame | None = None
    method_runs: pd.DataFrame | None = None
    method_trials: pd.DataFrame | None = None
    data: dict[str, Any] | None = None
    subclasses: dict[str, Any] | None = None
    pareto: pd.DataFrame | None = None  # results/pareto.parquet (a spec with search.objectives)

    search: SearchSpec = field(init=False)
    metric: str = field(init=False)
    mode: str = field(init=False)
    best_col: str = field(init=False)  # the trials table's column of the search metric

    def __post_init__(self) -> None:
        self.search = self.spec.search
        self.metric, self.mode = self.search.metric, self.search.mode
        self.best_col = f"best_{self.metric}"

    def done(self, stage: str) -> dict[str, Any] | None:
        """What `stage` recorded when it finished, or None."""
        return self.state.done(stage)

    def stages_done(self) -> list[str]:
        return [s for s in STAGE_NAMES if self.state.done(s) is not None]

    def counts(self) -> dict[str, int]:
        """Student trials by status (the experiment's `trial_counts`)."""
        return trial_counts(self.trials, self.search.num_samples)

    def best_id(self) -> str | None:
        """The best student trial (the experiment's `best_trial`), or None before any reported."""
        best = best_trial(self.trials, self.metric, self.mode)
        return None if best is None else str(best["trial_id"])

    @cached_property
    def params(self) -> list[str]:
        """The searched parameters that have a column in the student trials table."""
        cols = set(self.trials.columns) if self.trials is not None else set()
        return [p for p in self.search.space if p in cols]

    @cached_property
    def ranked(self) -> pd.DataFrame:
        """Student trials with a finite value of the search metric, best first (ties by trial id, as
        `best_trial`: the first row is the best trial)."""
        df = self.trials
        if df is None or df.empty or self.best_col not in df:
            return pd.DataFrame()
        df = df[pd.to_numeric(df[self.best_col], errors="coerce").notna()].copy()
        df[self.best_col] = df[self.best_col].astype(float)
        df = df.sort_values("trial_id", kind="stable")
        return df.sort_values(self.best_col, ascending=self.mode == "min", kind="stable").reset_index(drop=True)


def load(experiment: Experiment | str | os.PathLike) -> Loaded:
    """Read the experiment (an `Experiment` or its path); raises NotAnExperiment / ResultsError with a
    one-paragraph message naming the file and the fix."""
    exp = experiment if isinstance(experiment, Experiment) else Experiment.existing(experiment)
    spec = frozen_spec(exp)
    return Loaded(
        exp=exp,
        spec=spec,
        state=exp.state(),
        trials=exp.trials("student"),
        epochs=exp.epochs("student"),
        teacher_trials=exp.trials("teacher"),
        method_runs=_table(exp.result("method_runs")),
        method_trials=exp.trials("methods"),
        data=_object(exp, "data"),
        subclasses=_object(exp, "subclasses"),
        pareto=_table(exp.result("pareto")) if spec.search.objectives else None,
    )


def _table(value: Any) -> pd.DataFrame | None:
    return value if isinstance(value, pd.DataFrame) else None


def _object(exp: Experiment, kind: str) -> dict[str, Any] | None:
    """The JSON object of the results file `kind` (None until written); anything else is a ResultsError."""
    value = exp.result(kind)
    if value is None or isinstance(value, dict):
        return value
    raise ResultsError(
        f"{exp.path(results_file(kind))}: a JSON {type(value).__name__}, not an object. It was damaged; delete it "
        f"and run `skd-tune run {exp.location}` again to rewrite it"
    )
