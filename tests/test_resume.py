"""Interrupted searches resume with nothing lost: real `skd-tune run` subprocesses killed at several
points (SIGINT, SIGTERM, SIGKILL), then run again with the same command."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml

from skd_tune.results import ResultsTables

from .conftest import TINY_SPEC, deep_update, run_cli

pytestmark = pytest.mark.slow

# Long enough that a kill lands mid-stage: FIFO (every trial runs all its epochs), small batches.
KILL_SPEC = deep_update(
    TINY_SPEC,
    {
        "name": "k",
        "teacher": {"epochs": 6, "batch_size": 32},
        "student": {"epochs": 8, "batch_size": 32},
        "search": {
            "num_samples": 6,
            "scheduler": {"name": "fifo"},
            "checkpoint_interval_s": 0,  # a checkpoint every epoch
            "space": {"temperature": {"loguniform": [1.0, 10.0]}, "w_skd": {"uniform": [0.0, 1.0]}},
        },
    },
)
PARAMS = ["temperature", "w_skd"]


def _start(cwd, spec_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    log = open(cwd / "first.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "skd_tune", "run", str(spec_path)],
        cwd=cwd,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return proc, cwd / "first.log"


def _wait_for(log, ready, proc, timeout: float = 240) -> None:
    """Wait until `ready(text of the log)` holds (the run reached the kill point)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready(log.read_text()):
            return
        if proc.poll() is not None:
            pytest.fail(f"the run ended before the kill point:\n{log.read_text()}")
        time.sleep(0.1)
    proc.kill()
    pytest.fail(f"the kill point never came:\n{log.read_text()}")


def _after(pattern: str):
    return lambda text: pattern in text


def _students_done_at_least(n: int):
    def ready(text):
        done = [int(m) for m in re.findall(r"\[student\] trials (\d+)/\d+ done", text)]
        return bool(done) and max(done) >= n

    return ready


def _reported(exp, prefix=""):
    """What the killed driver had recorded (the journal replayed): epochs with their timestamps, statuses."""
    t = ResultsTables(exp / "results", PARAMS if not prefix else [], "val_f1", "max", prefix=prefix)
    try:
        return t.epochs_frame(), t.trials_frame()
    finally:
        t.close()


def _terminated(trials) -> int:
    return int((trials["status"] == "TERMINATED").sum()) if len(trials) else 0


def test_killed_at_every_stage_then_resumed_loses_nothing(tmp_path):
    """One experiment, killed again and again at successive points, then moved and run to the end.

    Kill points: SIGINT and SIGKILL while the teacher trains, SIGKILL right as the teacher is done (the
    teacher-logits stage), then SIGINT and SIGKILL during the student search (SIGTERM, a scheduler's
    preemption, is sent during the method table: test_method_table_stage_resumes_after_sigterm_and_sigkill).
    """
    spec_path = tmp_path / "k.yaml"
    spec_path.write_text(yaml.safe_dump(KILL_SPEC))
    exp = tmp_path / "runs" / "k"
    teacher_line = "[teacher] trials 0/1 done, 1 running, 0 pending, 0 errored | best"
    steps = [
        (signal.SIGINT, lambda: _after(teacher_line), 130),
        (signal.SIGKILL, lambda: _after(teacher_line), -9),
        (signal.SIGKILL, lambda: _after("[teacher] done"), -9),
        (signal.SIGINT, lambda: _students_done_at_least(_terminated(_reported(exp)[1]) + 1), 130),
        (signal.SIGKILL, lambda: _students_done_at_least(_terminated(_reported(exp)[1]) + 1), -9),
    ]
    snapshots = []
    for sig, ready, code in steps:
        proc, log = _start(tmp_path, spec_path)
        _wait_for(log, ready(), proc)
        proc.send_signal(sig)
        assert proc.wait(timeout=120) == code, log.read_text()
        text = log.read_text()
        if code == 130:
            assert "Resume with: skd-tune run" in text and "Traceback" not in text
        snapshots.append((sig, _reported(exp), _reported(exp, "teacher_")))

    # The last resume happens elsewhere: the experiment directory moved (another disk or host), resumed
    # by its directory. The trials the search creates after this restore must write to the new place
    # (Ray restores its search algorithm with the old storage path: pipeline.keep_in_place).
    moved = tmp_path / "elsewhere" / "k-moved"
    moved.parent.mkdir()
    shutil.move(exp, moved)
    status = run_cli("status", str(moved), cwd=tmp_path)
    assert status.returncode == 0 and "not finished; resume with: skd-tune run" in status.stdout
    again = run_cli("run", str(moved), cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "(resuming)" in again.stdout
    assert not exp.exists()  # nothing written back to the old place
    status = run_cli("status", str(moved), cwd=tmp_path)
    assert "6/6 terminated" in status.stdout and "export done" in status.stdout
    exp = moved

    trials = pd.read_parquet(exp / "results" / "trials.parquet")
    epochs = pd.read_parquet(exp / "results" / "epochs.parquet")
    assert len(trials) == 6 and trials["trial_id"].is_unique
    assert (trials["status"] == "TERMINATED").all(), trials["error"].dropna().tolist()
    assert not epochs.duplicated(["trial_id", "epoch"]).any()
    # FIFO: every trial has every epoch, 1..8, in the table
    assert all(sorted(g) == list(range(1, 9)) for g in epochs.groupby("trial_id")["epoch"].apply(list))
    teacher = pd.read_parquet(exp / "results" / "teacher_epochs.parquet")
    assert teacher["epoch"].tolist() == list(range(1, 7))

    for sig, (before_epochs, before_trials), (before_teacher, _) in snapshots:
        # Every epoch reported before the kill is still there; trials that had finished were not trained
        # again (a re-trained epoch would carry a new timestamp); running ones went on from their last
        # checkpoint: at most the epoch in flight at the kill (reported, its checkpoint not yet in
        # Tune's snapshot) was run again, never the ones before it.
        if len(before_epochs):
            merged = before_epochs.merge(epochs, on=["trial_id", "epoch"], how="left", suffixes=("_before", ""))
            assert merged["timestamp"].notna().all(), sig
            finished = set(before_trials.loc[before_trials["status"] == "TERMINATED", "trial_id"])
            fin = merged[merged["trial_id"].isin(finished)]
            assert (fin["timestamp_before"] == fin["timestamp"]).all(), sig
            last = merged.groupby("trial_id")["epoch"].transform("max")
            settled = merged[merged["epoch"] < last]
            assert (settled["timestamp_before"] == settled["timestamp"]).all(), sig
        if len(before_teacher) >= 2:
            # the teacher went on from its checkpoint too: its first epoch was never re-run
            t_first = before_teacher.loc[before_teacher["epoch"] == 1, "timestamp"].tolist()
            assert teacher.loc[teacher["epoch"] == 1, "timestamp"].tolist() == t_first, sig
    assert (exp / "export" / "model.pt").exists()


def _journal_epochs(exp) -> pd.DataFrame:
    return _reported(exp)[0]


def test_dead_worker_is_retried_from_its_checkpoint_then_errored(tmp_path):
    """Kill a trial's worker process: Tune retries it from its last checkpoint (FailureConfig). Killed
    once more than `max_failures`, it is recorded as errored with its error text, and the search goes on."""
    spec = deep_update(
        KILL_SPEC,
        {
            "name": "w",
            "teacher": {"epochs": 2},
            "student": {"epochs": 40, "batch_size": 16},
            "search": {"num_samples": 2, "max_concurrent": 1, "max_failures": 1},
        },
    )
    spec_path = tmp_path / "w.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    exp = tmp_path / "runs" / "w"
    proc, log = _start(tmp_path, spec_path)
    kills = []  # (trial_id, pid, last epoch reported before the kill)
    deadline = time.monotonic() + 240
    while len(kills) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
        if not (exp / "results" / "journal.jsonl").exists():
            continue
        epochs = _journal_epochs(exp)
        if epochs.empty:
            continue
        target = kills[0][0] if kills else epochs["trial_id"].iloc[0]
        mine = epochs[epochs["trial_id"] == target]
        last = mine.iloc[-1]
        if last["epoch"] >= 3 and (not kills or (last["pid"] != kills[-1][1] and last["epoch"] > kills[-1][2])):
            os.kill(int(last["pid"]), signal.SIGKILL)
            kills.append((target, int(last["pid"]), int(last["epoch"])))
            if len(kills) == 1:  # `status` from another terminal while the search runs
                status = run_cli("status", str(exp), cwd=tmp_path, timeout=60)
                assert status.returncode == 0, status.stderr
                assert "stages: teacher done, teacher_logits done, student -, export -" in status.stdout
                assert "not finished; resume with: skd-tune run" in status.stdout
    assert len(kills) == 2, log.read_text()
    assert proc.wait(timeout=300) == 0, log.read_text()

    trials = pd.read_parquet(exp / "results" / "trials.parquet").set_index("trial_id")
    epochs = pd.read_parquet(exp / "results" / "epochs.parquet")
    victim = kills[0][0]
    # After the first kill the trial went on from a checkpoint: a new worker reported the epochs after
    # the one it was killed at, and the epochs before it were not run again.
    mine = epochs[epochs["trial_id"] == victim].set_index("epoch")
    assert mine.loc[1, "pid"] == kills[0][1]
    later = mine[mine.index > kills[0][2]]
    assert (later["pid"] != kills[0][1]).any()  # (the epoch in flight at the kill may still carry the old pid)
    # The second kill exceeded max_failures = 1: errored, with the error text, while the other trial finished.
    assert trials.loc[victim, "status"] == "ERROR"
    assert isinstance(trials.loc[victim, "error"], str) and len(trials.loc[victim, "error"]) > 20
    others = trials.drop(index=victim)
    assert len(others) == 1 and (others["status"] == "TERMINATED").all() and (others["epochs"] == 40).all()
    assert (exp / "export" / "model.pt").exists()


def test_method_table_stage_resumes_after_sigterm_and_sigkill(tmp_path):
    """Interrupted twice while the method table is retrained (SIGTERM, as a batch scheduler preempting the
    job, then SIGKILL): the runs that had finished are kept as they were (same epochs, same timestamps),
    and the table ends with every method and seed exactly once."""
    spec = deep_update(
        KILL_SPEC,
        {
            "name": "m",
            "teacher": {"epochs": 2},
            "student": {"epochs": 6},
            "search": {"num_samples": 2},
            "methods": {"seeds": 2},
        },
    )
    spec_path = tmp_path / "m.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    exp = tmp_path / "runs" / "m"
    snapshots = []
    for sig, code, n in ((signal.SIGTERM, 130, 1), (signal.SIGKILL, -9, 3)):
        proc, log = _start(tmp_path, spec_path)
        # The journal records a run's end at once (the progress line may come later): kill right then.
        _wait_for(log, lambda text: "[methods]" in text and _terminated(_reported(exp, "methods_")[1]) >= n, proc)
        proc.send_signal(sig)
        assert proc.wait(timeout=120) == code, log.read_text()
        if code == 130:
            assert "methods stage interrupted" in log.read_text() and "Traceback" not in log.read_text()
        snapshots.append(_reported(exp, "methods_"))
        assert not (exp / "results" / "methods.parquet").exists()

    again = run_cli("run", str(spec_path), cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    runs = pd.read_parquet(exp / "results" / "methods.parquet")
    assert sorted(zip(runs["method"], runs["seed"])) == sorted((m, s) for m in ("no-KD", "KD", "SKD") for s in (0, 1))
    assert (runs["status"] == "TERMINATED").all() and runs["test_f1"].notna().all()
    epochs = pd.read_parquet(exp / "results" / "methods_epochs.parquet")
    assert not epochs.duplicated(["trial_id", "epoch"]).any()
    assert all(sorted(g) == list(range(1, 7)) for g in epochs.groupby("trial_id")["epoch"].apply(list))
    for before_epochs, before_trials in snapshots:
        finished = set(before_trials.loc[before_trials["status"] == "TERMINATED", "trial_id"])
        assert finished, "the kill came after at least one method run had finished"
        merged = before_epochs[before_epochs["trial_id"].isin(finished)].merge(
            epochs, on=["trial_id", "epoch"], how="left", suffixes=("_before", "")
        )
        assert (merged["timestamp_before"] == merged["timestamp"]).all()  # finished runs were not retrained
    trials = pd.read_parquet(exp / "results" / "trials.parquet")
    assert len(trials) == 2  # the search itself was not touched
