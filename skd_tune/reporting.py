"""When a trial's epoch is reported to the search, and when with a checkpoint: `ReportPolicy`.

Pure Python (no torch, no Ray): the trainables (tune/trainables.py) ask it after each epoch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

__all__ = ["EPOCHS_KEY", "ReportPolicy"]

# A report carries, under this key, the metrics of every epoch since the trial's previous report (the
# report's own top-level metrics are those of its last epoch): the results tables, Optuna and the
# progress display read every epoch from it.
EPOCHS_KEY = "epochs_since_report"


@dataclass
class ReportPolicy:
    """Which epochs of a trial are reported, and which of those carry a checkpoint.

    A report is a round trip to the driver (Ray Tune's controller, the scheduler, Optuna, the results
    tables), which the trial waits for: ~5-10 ms, most of a 30 ms epoch. A checkpoint (model, optimiser,
    the best epoch's weights, every epoch's metrics) costs a save and Ray Tune's persistence of it, tens
    of milliseconds for tiny models, seconds for large ones. An epoch's metrics are always kept; they
    are sent with the next report. An epoch is reported
      - with a checkpoint when it is the last epoch (its checkpoint holds the best weights that export and
        the method table use), when `checkpoint_interval_s` seconds have passed since the last checkpoint
        (or since the trial started), which bounds the work an interrupted or failed trial runs again
        (0: every epoch), or when it is one of `decision_epochs` (where the scheduler may stop the trial:
        ASHA's rungs), so that a trial that ended has a checkpoint at its last epoch;
      - without one when `report_interval_s` seconds have passed since the last report (0: every epoch),
        which bounds how stale the live tables and the progress display are.
    So the scheduler sees every rung's epoch when it is reached, and a trial restored from an older
    experiment snapshot goes on from its own latest checkpoint, training no epoch again (tune/trainables.py).
    """

    checkpoint_interval_s: float
    last_epoch: int
    decision_epochs: frozenset[int] = frozenset()
    report_interval_s: float = 0.0
    last_saved: float = field(default_factory=time.monotonic)
    last_reported: float = field(default_factory=time.monotonic)

    def checkpoint_due(self, epoch: int, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        return (
            epoch >= self.last_epoch
            or now - self.last_saved >= self.checkpoint_interval_s
            or epoch in self.decision_epochs
        )

    def report_due(self, epoch: int, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        return self.checkpoint_due(epoch, now) or now - self.last_reported >= self.report_interval_s

    def reported(self, checkpoint: bool, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self.last_reported = now
        if checkpoint:
            self.last_saved = now
