"""Ray Tune callbacks, one concern each: the results tables, and the progress line.

Both are built by the stage for the run at hand (`stage.run_tune_stage` gives a restored Tune
experiment this run's callbacks again), so they hold this process's objects (the tables, the printer)
and pickle to nothing when Tune saves its experiment.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ray import tune

from ..experiment import ResultsTables
from ..experiment.results import format_value

__all__ = ["ProgressCallback", "ResultsCallback"]

# Keys Ray adds to every result that say nothing about the training (kept out of the epochs table).
_RAY_BOOKKEEPING = {
    "checkpoint_dir_name",
    "should_checkpoint",
    "done",
    "training_iteration",
    "date",
    "time_this_iter_s",
    "time_since_restore",
    "iterations_since_restore",
    "config",
    "experiment_tag",
    "trial_id",
}


class _ThisRunOnly:
    """Pickles to nothing: Tune saves its callbacks with the experiment, a restore gets new ones."""

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        pass


class ResultsCallback(_ThisRunOnly, tune.Callback):
    """Feeds the stage's results tables: every result (an epoch) and every status change of a trial."""

    def __init__(self, tables: ResultsTables, max_epochs: int, fixed: dict[str, Any] | None = None):
        self.tables, self.max_epochs, self.fixed = tables, max_epochs, dict(fixed or {})

    def _params(self, trial: Any) -> dict[str, Any]:
        return {**trial.config, **self.fixed}

    def _set(self, trial: Any, **fields: Any) -> None:
        self.tables.set_trial(trial.trial_id, params=self._params(trial), max_epochs=self.max_epochs, **fields)

    def on_trial_start(self, iteration, trials, trial, **info):
        self._set(trial, status="RUNNING")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        metrics = {k: v for k, v in result.items() if k not in _RAY_BOOKKEEPING}
        self.tables.add_epoch(trial.trial_id, self._params(trial), metrics)
        self.tables.flush()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._set(trial, status="TERMINATED")
        self.tables.flush(force=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        error = None
        if trial.error_file and Path(trial.error_file).exists():
            error = Path(trial.error_file).read_text()[-4000:]
        self._set(trial, status="ERROR", error=error or "error")
        self.tables.flush(force=True)

    def on_experiment_end(self, trials, **info):
        self.tables.flush(force=True)


class ProgressCallback(_ThisRunOnly, tune.Callback):
    """One line through `printer` whenever the trials' statuses change, with the best trial so far.

    Runs between every two results of the trials, which wait for the driver: kept cheap. The best
    trial (`best()`, a pass over the tables) is looked up at most once a second."""

    def __init__(
        self,
        label: str,
        total: int,
        metric: str,
        param_names: list[str],
        best: Callable[[], dict[str, Any] | None],
        printer: Callable[[str], None],
    ):
        self.label, self.total, self.metric, self.param_names = label, total, metric, list(param_names)
        self.best, self.printer = best, printer
        self._last_line, self._best_part, self._last_lookup = "", "", 0.0

    def line(self, trials: list[Any], *, look_up_best: bool) -> str:
        counts = Counter(t.status for t in trials)
        pending = max(self.total - len(trials), 0) + counts["PENDING"]
        line = (
            f"[{self.label}] trials {counts['TERMINATED']}/{self.total} done, {counts['RUNNING']} running, "
            f"{pending} pending, {counts['ERROR']} errored"
        )
        if look_up_best:
            best = self.best()
            if best is not None:
                params = ", ".join(f"{p}={format_value(best.get(p))}" for p in self.param_names)
                self._best_part = (
                    f" | best {self.metric} {best[f'best_{self.metric}']:.4f} "
                    f"({best['trial_id']}{': ' + params if params else ''})"
                )
        return line + self._best_part

    def _show(self, trials: list[Any], force: bool = False) -> None:
        now = time.monotonic()
        look_up = force or now - self._last_lookup >= 1.0
        if look_up:
            self._last_lookup = now
        line = self.line(trials, look_up_best=look_up)
        if line != self._last_line:
            self.printer(line)
            self._last_line = line

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self._show(trials)

    def on_trial_start(self, iteration, trials, trial, **info):
        self._show(trials)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._show(trials)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._show(trials)

    def on_experiment_end(self, trials, **info):
        self._show(trials, force=True)
