"""ReportPolicy: which epochs a trial reports, and which with a checkpoint."""

from __future__ import annotations

from skd_tune.reporting import ReportPolicy


def test_checkpoint_at_the_last_epoch_after_the_interval_and_at_each_rung():
    p = ReportPolicy(10.0, last_epoch=20, decision_epochs=frozenset({3, 9}), last_saved=100.0, last_reported=100.0)
    assert not p.checkpoint_due(1, now=101.0)  # no rung, no time passed
    assert p.checkpoint_due(3, now=102.0)  # a rung: a trial stopped there keeps a checkpoint of its last epoch
    assert p.checkpoint_due(5, now=110.0)  # the interval passed
    p.reported(checkpoint=True, now=110.0)
    assert not p.checkpoint_due(6, now=119.9)
    assert p.checkpoint_due(20, now=111.0)  # the last epoch, always
    every = ReportPolicy(0.0, last_epoch=20, last_saved=100.0)
    assert all(every.checkpoint_due(e, now=100.0) for e in range(1, 21))


def test_reports_at_most_every_interval_and_with_every_checkpoint():
    p = ReportPolicy(60.0, last_epoch=20, decision_epochs=frozenset({5}), report_interval_s=1.0, last_saved=0.0)
    p.reported(checkpoint=False, now=0.0)
    assert not p.report_due(1, now=0.5)  # kept, sent with the next report
    assert p.report_due(2, now=1.0)  # the report interval passed
    p.reported(checkpoint=False, now=1.0)
    assert not p.checkpoint_due(2, now=1.0) and p.last_saved == 0.0  # a report alone is no checkpoint
    assert p.report_due(5, now=1.2)  # a rung: reported (with a checkpoint) when reached
    assert p.report_due(20, now=1.3)  # the last epoch
    assert p.report_due(7, now=60.0) and p.checkpoint_due(7, now=60.0)  # the checkpoint interval passed
    each = ReportPolicy(60.0, last_epoch=20, report_interval_s=0.0, last_saved=0.0, last_reported=0.0)
    assert all(each.report_due(e, now=0.0) for e in range(1, 21))
