"""Parquet tables of a Tune stage: one row per trial-epoch (`epochs.parquet`) and one per trial
(`trials.parquet`, derived from the epochs plus each trial's status).

Both files are rewritten atomically (`atomic.write_atomic`), so `pandas.read_parquet` works at any
moment while a search runs. The rewrites are throttled; what has not been rewritten yet is never lost:
every record is first appended to the table's journal (one JSON line, no rewrite), which is replayed
when the tables are opened again, e.g. after the driver was killed. The Parquet files are derived from
the journal: a damaged one is rebuilt from it. Nothing here imports Ray: the Tune layer feeds the tables
from a callback. `best_trial` and `trial_counts` are the only definitions of those two things.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..atomic import write_atomic
from ..errors import ResultsError, first_line
from ..names import COST_METRICS
from .layout import table_files

__all__ = [
    "STATUSES",
    "ResultsError",
    "ResultsTables",
    "best_trial",
    "read_table",
    "trial_counts",
    "write_table_atomic",
]

# The trial statuses the tables record, in the order status lines list them.
STATUSES = ("TERMINATED", "RUNNING", "PENDING", "ERROR")


def write_table_atomic(df: pd.DataFrame, path: Path) -> None:
    """Write `df` to `path` as Parquet so readers only ever see a complete file."""
    table = pa.Table.from_pandas(df, preserve_index=False)
    write_atomic(path, lambda tmp: pq.write_table(table, tmp), to_path=True)


_REBUILD = (
    ". It was damaged (a full disk, or a copy cut short). Run the experiment again (`skd-tune run EXPERIMENT`), "
    "which rebuilds it from its journal; or move it aside and resume the run"
)


def read_table(path: Path, fix: str = _REBUILD) -> pd.DataFrame | None:
    """The table at `path`, or None when there is none yet; a damaged file raises `ResultsError` (ending in `fix`)."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        return pq.read_table(path).to_pandas()
    except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid / ArrowIOError
        raise ResultsError(f"{path}: not a readable Parquet file ({first_line(e)}){fix}") from None


def best_trial(trials: pd.DataFrame | None, metric: str, mode: str) -> dict[str, Any] | None:
    """The trial with the best `best_<metric>` (ties: the first by trial id), as a dict; None before any epoch."""
    col = f"best_{metric}"
    if trials is None or trials.empty or col not in trials or trials[col].isna().all():
        return None
    ordered = trials.sort_values("trial_id", kind="stable")
    pos = ordered[col].astype(float).idxmax() if mode == "max" else ordered[col].astype(float).idxmin()
    return ordered.loc[pos].to_dict()


def format_value(v: Any) -> str:
    """A parameter value as status lines show it (floats to 4 significant digits)."""
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def trial_counts(trials: pd.DataFrame | None, num_samples: int) -> dict[str, int]:
    """Trials by status (STATUSES); the trials not created yet count as PENDING."""
    counts = dict.fromkeys(STATUSES, 0)
    if trials is not None and not trials.empty:
        for status, n in trials["status"].value_counts().items():
            counts[str(status)] = counts.get(str(status), 0) + int(n)
    counts["PENDING"] += max(num_samples - sum(counts.values()), 0)
    return counts


class ResultsTables:
    """Accumulates per-epoch metrics and trial statuses; writes `trials.parquet` and `epochs.parquet`.

    `param_names` are the searched parameters (one column each in the trials table); `metric` and
    `mode` pick each trial's best epoch; `table` names the stage's tables (student, teacher, methods);
    `on_write(paths)` is called after each flush with the files written (e.g. to upload them).
    Existing tables in `results_dir` are loaded first, so a
    resumed search keeps every epoch already recorded (duplicates by trial and epoch are dropped).
    """

    def __init__(
        self,
        results_dir: Path,
        param_names: list[str],
        metric: str,
        mode: str,
        min_interval_s: float = 1.0,
        table: str = "student",
        on_write: Callable[[list[Path]], None] | None = None,
    ):
        self.dir = Path(results_dir)
        files = {kind: self.dir / Path(rel).name for kind, rel in table_files(table).items()}
        self.epochs_path, self.trials_path, self.journal_path = files["epochs"], files["trials"], files["journal"]
        self.param_names = list(param_names)
        self.metric = metric
        self.mode = mode
        self.min_interval_s = min_interval_s
        self.on_write = on_write
        self._epochs: list[dict[str, Any]] = []
        self._trials: dict[str, dict[str, Any]] = {}
        # Kept as records arrive, so that a table's rows cost what changed, not the whole search: each
        # trial's epochs by epoch number (the last report of an epoch wins) and its trials-table row,
        # recomputed only for the trials touched since (`_stale`).
        self._by_trial: dict[str, dict[Any, dict[str, Any]]] = {}
        self._rows: dict[str, dict[str, Any]] = {}
        self._stale: set[str] = set()
        self._write_s = 0.0  # how long the last flush took (the flush interval adapts to it)
        self._last_flush = 0.0
        self._dirty = False
        self._journal = None
        self._load()

    # -- input -----------------------------------------------------------------------------------
    def add_epoch(self, trial_id: str, params: dict[str, Any], metrics: dict[str, Any]) -> None:
        """Record one epoch's metrics of a trial (and mark the trial RUNNING)."""
        self._add_epoch(trial_id, params, metrics)
        self._append({"epoch": {"trial_id": trial_id, "params": _plain(params), "metrics": _plain(metrics)}})

    def set_trial(self, trial_id: str, **fields: Any) -> None:
        """Update a trial's `params`, `status`, `checkpoint_path`, `error` or `max_epochs`."""
        self._set_trial(trial_id, **fields)
        self._append({"trial": {"trial_id": trial_id, **{k: _plain(v) for k, v in fields.items()}}})

    def drop_trial(self, trial_id: str) -> None:
        """Forget a trial and its epochs (one that Ray Tune never recorded, see pipeline.py)."""
        self._drop_trial(trial_id)
        self._append({"drop": {"trial_id": trial_id}})

    def _drop_trial(self, trial_id: str) -> None:
        self._trials.pop(trial_id, None)
        self._epochs = [row for row in self._epochs if row["trial_id"] != trial_id]
        self._by_trial.pop(trial_id, None)
        self._rows.pop(trial_id, None)
        self._stale.discard(trial_id)
        self._dirty = True

    def trial_ids(self) -> list[str]:
        return list(self._trials)

    def _append(self, record: dict[str, Any]) -> None:
        if self._journal is None:
            self.dir.mkdir(parents=True, exist_ok=True)
            cut = self.journal_path.exists() and _last_byte(self.journal_path) not in (b"", b"\n")
            self._journal = open(self.journal_path, "a", buffering=1)  # noqa: SIM115 - line-buffered, one write per record
            if cut:  # a killed driver's last record was cut short: keep it on its own line
                self._journal.write("\n")
        self._journal.write(json.dumps(record) + "\n")

    def close(self) -> None:
        if self._journal is not None:
            self._journal.close()
            self._journal = None

    def __getstate__(self):
        raise TypeError("ResultsTables holds an open journal and is not picklable")

    def _add_epoch(self, trial_id: str, params: dict[str, Any], metrics: dict[str, Any]) -> None:
        row = {"trial_id": trial_id}
        for k, v in metrics.items():
            if isinstance(v, np.generic):
                v = v.item()
            if isinstance(v, (int, float, str, bool)) or v is None:
                row[k] = v
        self._epochs.append(row)
        self._by_trial.setdefault(trial_id, {})[row.get("epoch")] = row
        self._set_trial(trial_id, params=params, status="RUNNING")

    def _set_trial(
        self,
        trial_id: str,
        *,
        params: dict[str, Any] | None = None,
        status: str | None = None,
        checkpoint_path: str | None = None,
        error: str | None = None,
        max_epochs: int | None = None,
    ) -> None:
        info = self._trials.setdefault(
            trial_id, {"trial_id": trial_id, "status": "PENDING", "checkpoint_path": None, "error": None}
        )
        if params is not None:
            info.update({p: params.get(p) for p in self.param_names})
        if status is not None:
            info["status"] = status
        if checkpoint_path is not None:
            info["checkpoint_path"] = checkpoint_path
        if error is not None:
            info["error"] = error
        if max_epochs is not None:
            info["max_epochs"] = max_epochs
        self._stale.add(trial_id)
        self._dirty = True

    # -- output ----------------------------------------------------------------------------------
    def epochs_frame(self) -> pd.DataFrame:
        df = pd.DataFrame(self._epochs)
        if df.empty:
            return pd.DataFrame({"trial_id": pd.Series(dtype="string"), "epoch": pd.Series(dtype="int64")})
        df = df.drop_duplicates(subset=["trial_id", "epoch"], keep="last")
        return df.sort_values(["trial_id", "epoch"], kind="stable").reset_index(drop=True)

    def trials_frame(self) -> pd.DataFrame:
        """One row per trial: parameters, status, epochs, best and last val metrics, cost, checkpoint, error.

        The cost (names.COST_METRICS, the student's `cost.measure_cost`) is one plain column per metric, named
        as in COST_METRICS, holding the trial's value (the same in each of its epochs; its last reported).
        The columns appear once any trial has reported its cost (student and method trials; never a teacher's).

        The driver calls this on every flush, so a row is recomputed only when its trial changed (`_row`);
        building the frame from the kept rows is all that grows with the size of the search."""
        self._refresh_rows()
        df = pd.DataFrame([self._rows[t] for t in sorted(self._rows)])
        if df.empty:
            return pd.DataFrame({"trial_id": pd.Series(dtype="string"), "status": pd.Series(dtype="string")})
        for col in ("checkpoint_path", "error"):
            df[col] = df[col].astype("string")
        return df

    def _refresh_rows(self) -> None:
        for trial_id in self._stale:
            if trial_id in self._trials:
                self._rows[trial_id] = self._row(trial_id)
        self._stale.clear()

    def _row(self, trial_id: str) -> dict[str, Any]:
        """A trial's row of the trials table, from its own epochs (ordered by epoch, the last report of each).
        The best epoch is the first with the best `metric` (NaN skipped); in a trial whose every epoch had
        NaN (a diverged one), the last epoch."""
        info = self._trials[trial_id]
        row = {"trial_id": trial_id, **{p: info.get(p) for p in self.param_names}, "status": info["status"]}
        epochs = self._by_trial.get(trial_id, {})
        mine = [epochs[e] for e in sorted(epochs, key=_epoch_order)]
        row["epochs"] = len(mine)
        if mine:
            scored = [(v, i) for i, r in enumerate(mine) if (v := _number(r.get(self.metric))) == v]
            sign = -1.0 if self.mode == "max" else 1.0
            best = mine[min(scored, key=lambda vi: (sign * vi[0], vi[1]))[1]] if scored else mine[-1]
            last = mine[-1]
            row["best_epoch"] = int(best["epoch"])
            for col in sorted({c for r in mine for c in r if c.startswith("val_")}):
                row[f"best_{col}"] = _number(best.get(col))
                row[f"last_{col}"] = _number(last.get(col))
            times = [_number(r.get("epoch_time_s")) for r in mine if "epoch_time_s" in r]
            row["time_total_s"] = math.fsum(t for t in times if t == t) if times else math.nan
        for col in COST_METRICS:
            known = [v for r in mine if (v := _number(r.get(col))) == v]
            if known or any(col in r for r in mine):
                row[col] = known[-1] if known else math.nan
        max_epochs = info.get("max_epochs")
        row["max_epochs"] = max_epochs
        row["stopped_early"] = bool(max_epochs and info["status"] == "TERMINATED" and row["epochs"] < max_epochs)
        row["checkpoint_path"] = info.get("checkpoint_path")
        row["error"] = info.get("error")
        return row

    def best_trial(self) -> dict[str, Any] | None:
        """The best trial so far (as `best_trial` of the trials table: ties, the first by trial id), as a
        dict of its row; None before any epoch. A pass over the kept rows, without building the frame."""
        self._refresh_rows()
        col, best = f"best_{self.metric}", None
        for trial_id in sorted(self._rows):
            value = _number(self._rows[trial_id].get(col))
            if value != value:
                continue
            if best is None or (value > best[0] if self.mode == "max" else value < best[0]):
                best = (value, trial_id)
        return dict(self._rows[best[1]]) if best else None

    def flush(self, force: bool = False) -> bool:
        """Rewrite both tables if anything changed: at most every `min_interval_s`, or 19 times as long as
        the last rewrite took (so rewriting stays under 5% of the driver's time as the tables grow), unless
        `force`. Nothing waiting is lost meanwhile: every record is in the journal already."""
        now = time.monotonic()
        interval = max(self.min_interval_s, 19 * self._write_s)
        if not self._dirty or (not force and now - self._last_flush < interval):
            return False
        write_table_atomic(self.epochs_frame(), self.epochs_path)
        write_table_atomic(self.trials_frame(), self.trials_path)
        self._last_flush = time.monotonic()
        self._write_s = self._last_flush - now
        self._dirty = False
        if self.on_write is not None:
            self.on_write([p for p in (self.journal_path, self.epochs_path, self.trials_path) if p.exists()])
        return True

    def _load(self) -> None:
        """Rebuild the state from the journal (complete), or else from the Parquet files."""
        if self.journal_path.exists():
            with open(self.journal_path) as f:
                for number, line in enumerate(f, 1):
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError as e:
                        if line.startswith(_RECORD_STARTS):
                            continue  # a record cut short by a kill mid-write: it was never complete
                        raise ResultsError(
                            f"{self.journal_path}: line {number} is not a record ({first_line(e)}). The journal, the "
                            "record behind the results tables, was damaged; restore it from a copy, or move it aside "
                            "and run again: the tables are then read from their Parquet files, and what those lack "
                            "of the last second before the damage is lost"
                        ) from None
                    if "epoch" in record:
                        r = record["epoch"]
                        self._add_epoch(r["trial_id"], r["params"], r["metrics"])
                    elif "trial" in record:
                        r = dict(record["trial"])
                        self._set_trial(r.pop("trial_id"), **r)
                    elif "drop" in record:
                        self._drop_trial(record["drop"]["trial_id"])
            self._dirty = True  # the Parquet files may lag behind the journal
            return
        epochs = self._read(self.epochs_path)
        if epochs is not None and not epochs.empty:
            self._epochs = epochs.to_dict("records")
            for row in self._epochs:
                self._by_trial.setdefault(row["trial_id"], {})[row.get("epoch")] = row
        trials = self._read(self.trials_path)
        if trials is not None and not trials.empty:
            for rec in trials.to_dict("records"):
                self._set_trial(
                    rec["trial_id"],
                    params={p: rec.get(p) for p in self.param_names},
                    status=rec.get("status"),
                    checkpoint_path=rec.get("checkpoint_path") if isinstance(rec.get("checkpoint_path"), str) else None,
                    error=rec.get("error") if isinstance(rec.get("error"), str) else None,
                    max_epochs=int(rec["max_epochs"]) if pd.notna(rec.get("max_epochs")) else None,
                )
        self._dirty = False

    @staticmethod
    def _read(path: Path) -> pd.DataFrame | None:
        no_journal = (
            ", and there is no journal to rebuild it from; move it aside and run again (the trials are then "
            "re-read as they report)"
        )
        return read_table(path, fix=no_journal)


_RECORD_STARTS = ('{"epoch"', '{"trial"', '{"drop"')  # how every journal record begins (see `_append`)


def _number(value: Any) -> float:
    """A metric as a float; NaN for a missing or non-numeric one."""
    try:
        return float(value) if value is not None else math.nan
    except (TypeError, ValueError):
        return math.nan


def _epoch_order(epoch: Any) -> tuple[int, float]:
    return (0, float(epoch)) if isinstance(epoch, int | float) and epoch == epoch else (1, 0.0)


def _last_byte(path: Path) -> bytes:
    with open(path, "rb") as f:
        f.seek(0, 2)
        if f.tell() == 0:
            return b""
        f.seek(-1, 2)
        return f.read(1)


def _plain(value: Any) -> Any:
    """JSON-safe copy: numpy scalars to Python, containers recursively, anything else as `str`."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value
    return str(value)
