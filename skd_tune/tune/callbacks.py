"""Ray Tune callbacks, one concern each: the results tables, and the progress display.

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
from ..progress import Display, Snapshot, display_for
from ..reporting import EPOCHS_KEY

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
    EPOCHS_KEY,
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
        params, epochs = self._params(trial), result.get(EPOCHS_KEY) or [result]
        # What Ray adds to each report (timestamp, time_total_s, pid, hostname, node_ip) goes with each of
        # the epochs the report carries.
        added = {k: v for k, v in result.items() if k not in _RAY_BOOKKEEPING and k not in epochs[-1]}
        for epoch in epochs:
            metrics = {k: v for k, v in {**added, **epoch}.items() if k not in _RAY_BOOKKEEPING}
            self.tables.add_epoch(trial.trial_id, params, metrics)
        self.tables.flush()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._set(trial, status="TERMINATED")
        self.tables.flush()  # throttled: the journal has the record already; the stage's end forces a flush

    def on_trial_error(self, iteration, trials, trial, **info):
        error = None
        if trial.error_file and Path(trial.error_file).exists():
            error = Path(trial.error_file).read_text()[-4000:]
        self._set(trial, status="ERROR", error=error or "error")
        self.tables.flush()

    def on_experiment_end(self, trials, **info):
        self.tables.flush(force=True)


class ProgressCallback(_ThisRunOnly, tune.Callback):
    """Drives the stage's progress display (`progress.display_for(printer)`: live on a terminal, else
    plain lines): the picture on every status change, a line about each trial that finishes, and the
    stage's summary line at the end.

    Runs between every two results of the trials, which wait for the driver: kept cheap. The best
    trial (`best()`, a pass over the tables) is looked up at most once a second; each trial's own best
    `metric` is kept as its results arrive (`mode`: max or min; default, that of the tables `best`
    belongs to, else max)."""

    def __init__(
        self,
        label: str,
        total: int,
        metric: str,
        param_names: list[str],
        best: Callable[[], dict[str, Any] | None],
        printer: Callable[[str], None],
        mode: str | None = None,
    ):
        self.label, self.total, self.metric, self.param_names = label, total, metric, list(param_names)
        self.best, self.printer = best, printer
        self.mode = mode or getattr(getattr(best, "__self__", None), "mode", "max")
        self.display: Display | None = None
        self._last: Snapshot | None = None
        self._best_part, self._last_lookup = "", 0.0
        self._trial_best: dict[str, float] = {}

    def _params(self, params: dict[str, Any]) -> str:
        return ", ".join(f"{p}={format_value(params[p])}" for p in self.param_names if params.get(p) is not None)

    def snapshot(self, trials: list[Any], *, look_up_best: bool, ended: tuple[Any, str] | None = None) -> Snapshot:
        """The picture `trials` make; `ended`: (trial, status) of a trial Tune has not yet marked ended."""
        counts = Counter(ended[1] if ended and t is ended[0] else t.status for t in trials)
        pending = max(self.total - len(trials), 0) + counts["PENDING"]
        if look_up_best:
            best = self.best()
            if best is not None:
                params = self._params(best)
                value, trial_id = best[f"best_{self.metric}"], best["trial_id"]
                self._best_part = f"{self.metric} {value:.4f} ({trial_id}{': ' + params if params else ''})"
        return Snapshot(
            self.label, self.total, counts["TERMINATED"], counts["RUNNING"], pending, counts["ERROR"], self._best_part
        )

    def finished_line(self, trial: Any, errored: bool = False) -> str:
        params = self._params(trial.config)
        value = self._trial_best.get(trial.trial_id)
        what = "errored" if errored else (f"{self.metric} {value:.4f}" if value is not None else "no result")
        return f"[{self.label}] trial {trial.trial_id} {'' if errored else 'done: '}{what}" + (
            f" ({params})" if params else ""
        )

    def _show(self, trials: list[Any], finished: str | None = None, ended: tuple[Any, str] | None = None) -> None:
        if self.display is None:
            self.setup()
        now = time.monotonic()
        look_up = finished is not None or now - self._last_lookup >= 1.0
        if look_up:
            self._last_lookup = now
        snapshot = self.snapshot(trials, look_up_best=look_up, ended=ended)
        if snapshot != self._last or finished:
            self.display.update(snapshot, finished)
            self._last = snapshot

    def setup(self, **info):
        self.display = display_for(self.printer)
        self.display.start(self.label, self.total)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        for epoch in result.get(EPOCHS_KEY) or [result]:
            value = epoch.get(self.metric)
            if isinstance(value, int | float) and value == value:  # not NaN
                seen = self._trial_best.get(trial.trial_id)
                if seen is None or (value > seen if self.mode == "max" else value < seen):
                    self._trial_best[trial.trial_id] = float(value)
        self._show(trials)

    def on_trial_start(self, iteration, trials, trial, **info):
        self._show(trials)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._show(trials, self.finished_line(trial), (trial, "TERMINATED"))

    def on_trial_error(self, iteration, trials, trial, **info):
        self._show(trials, self.finished_line(trial, errored=True), (trial, "ERROR"))

    def on_experiment_end(self, trials, **info):
        if self.display is None:
            self.setup()
        self.display.finish(self.snapshot(trials, look_up_best=True))
