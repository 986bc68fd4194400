"""Interrupted searches resume with nothing lost: real `skd-tune run` subprocesses stopped at known
points (the trainables' test barrier) by SIGINT, SIGTERM or SIGKILL, then run again with the same command."""

from __future__ import annotations

import os
import re
import shutil
import signal

import pandas as pd
import pytest
import yaml

from skd_tune.experiment import ResultsTables

from .conftest import TINY_SPEC, Barrier, deep_update, run_cli, start_cli

pytestmark = pytest.mark.slow

# FIFO (every trial runs all its epochs), a checkpoint every epoch, 2 trials at a time.
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


def _reported(exp, table="student"):
    """What the stopped driver had recorded (the journal replayed): epochs with their end times, statuses."""
    params = {"student": PARAMS, "search_kd": ["temperature", "w_kd", "w_skd"]}.get(table, [])
    t = ResultsTables(exp / "results", params, "val_f1", "max", table=table)
    try:
        return t.epochs_frame(), t.trials_frame()
    finally:
        t.close()


def _finished(trials) -> set[str]:
    return set(trials.loc[trials["status"] == "TERMINATED", "trial_id"]) if len(trials) else set()


# Ray Tune snapshots its experiment when a session starts, then at most every this many seconds (the
# period's floor is 10 s by default): here only at the start and when a trial has checkpointed 3 times
# since, so the last stops come after trials that Ray's snapshot holds as running had ended.
SNAPSHOT_PERIOD = {"TUNE_GLOBAL_CHECKPOINT_S": "3600"}


def _stop_at(tmp_path, spec_path, step: int, stage: str, epoch: int, sig: int, code: int, n: int = 1) -> str:
    """Run until `n` processes wait at the barrier (stage, epoch), send `sig`, release the barrier, and
    check the exit code; returns the run's output."""
    barrier = Barrier(tmp_path / f"barrier-{step}", stage, epoch)
    log = tmp_path / f"run-{step}.log"
    proc = start_cli("run", str(spec_path), cwd=tmp_path, log=log, env=barrier.env | SNAPSHOT_PERIOD)
    barrier.wait(proc, n=n, log=log)
    proc.send_signal(sig)
    if code == 130:
        barrier.release()  # a driver stopping gracefully lets its trials report (a killed one's stay, stopped later)
    assert proc.wait(timeout=120) == code, log.read_text()
    text = log.read_text()
    if code == 130:
        assert "Resume with: skd-tune run" in text and "Traceback" not in text
    return text


def _assert_not_rerun(
    before: pd.DataFrame, after: pd.DataFrame, finished: set[str], label, went_on: dict[str, str] | None = None
) -> None:
    """Epochs reported before a stop keep their end time (`epoch_end`, sub-second) afterwards: finished
    trials were not trained again, and running ones went on from their last checkpoint (only the epoch
    in flight at the stop, the last one reported, may have been run again). `went_on`: trials that Ray's
    snapshot did not hold yet, and the new trials that went on from their checkpoints."""
    assert len(before), label  # the stop came after epochs were reported
    before = before.assign(trial_id=before["trial_id"].replace(went_on or {}))
    merged = before.merge(after, on=["trial_id", "epoch"], how="left", suffixes=("_before", ""))
    assert merged["epoch_end"].notna().all(), label
    last = merged.groupby("trial_id")["epoch"].transform("max")
    settled = merged[merged["trial_id"].isin(finished) | (merged["epoch"] < last)]
    assert len(settled), label
    assert (settled["epoch_end_before"] == settled["epoch_end"]).all(), label


def test_killed_at_every_stage_then_resumed_loses_nothing(tmp_path):
    """One experiment, stopped again and again at successive points, then moved and run to the end.

    SIGINT and SIGKILL while the teacher trains, SIGKILL while the teacher's logits are computed, then
    SIGINT and SIGKILL during the student search (SIGTERM, a scheduler's preemption, is sent during the
    method table: test_method_table_stage_resumes_after_sigterm_and_sigkill). The last student stop
    comes after the two trials resumed from the SIGINT finished and two new ones started: a stop with
    finished trials in the table."""
    spec_path = tmp_path / "k.yaml"
    spec_path.write_text(yaml.safe_dump(KILL_SPEC))
    exp = tmp_path / "runs" / "k"
    steps = [
        ("teacher", 3, signal.SIGINT, 130, 1),
        ("teacher", 4, signal.SIGKILL, -9, 1),
        ("teacher_logits", 0, signal.SIGKILL, -9, 1),
        ("student", 7, signal.SIGINT, 130, 2),
        ("student", 3, signal.SIGKILL, -9, 2),
    ]
    snapshots = []
    for step, (stage, epoch, sig, code, n) in enumerate(steps):
        _stop_at(tmp_path, spec_path, step, stage, epoch, sig, code, n)
        snapshots.append(((stage, epoch, sig), _reported(exp), _reported(exp, "teacher")))
    assert len(_finished(snapshots[-1][1][1])) >= 2  # the two trials resumed after the SIGINT had finished

    # The last resume happens elsewhere: the experiment directory moved (another disk or host), resumed by
    # its directory. The trials the search creates after this restore must write to the new place (Ray
    # restores its search algorithm with the old storage path: tune.search.keep_in_place).
    moved = tmp_path / "elsewhere" / "k-moved"
    moved.parent.mkdir()
    shutil.move(exp, moved)
    status = run_cli("status", str(moved), cwd=tmp_path)
    assert status.returncode == 0 and "not finished; resume with: skd-tune run" in status.stdout
    again = run_cli("run", str(moved), cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "(resuming)" in again.stdout and "stopped" in again.stdout  # the killed driver's Ray processes
    # The two trials started after the session's snapshot were running at the SIGKILL: unknown to the
    # restored search, they went on as new trials (their Optuna trials, their checkpoints).
    line = re.search(r"2 trial\(s\) started just before a kill .* went on as new trials: (.*)\n", again.stdout)
    assert line, again.stdout
    went_on = dict(pair.split(" -> ") for pair in line.group(1).split(", "))
    assert len(went_on) == 2 and "(none)" not in went_on.values(), line.group(0)
    assert not exp.exists()  # nothing written back to the old place
    status = run_cli("status", str(moved), cwd=tmp_path)
    assert "6/6 terminated" in status.stdout and "export done" in status.stdout

    trials = pd.read_parquet(moved / "results" / "trials.parquet")
    epochs = pd.read_parquet(moved / "results" / "epochs.parquet")
    assert len(trials) == 6 and trials["trial_id"].is_unique
    assert (trials["status"] == "TERMINATED").all(), trials["error"].dropna().tolist()
    assert not epochs.duplicated(["trial_id", "epoch"]).any()
    assert all(sorted(g) == list(range(1, 9)) for g in epochs.groupby("trial_id")["epoch"].apply(list))
    teacher = pd.read_parquet(moved / "results" / "teacher_epochs.parquet")
    assert teacher["epoch"].tolist() == list(range(1, 7))
    for label, (before_epochs, before_trials), (before_teacher, teacher_trials) in snapshots:
        _assert_not_rerun(before_teacher, teacher, _finished(teacher_trials), label)
        if label[0] == "student":
            # The two trials the SIGINT stopped at epoch 7 finished after the snapshot that the SIGKILL
            # left (it holds them running, at their epoch-7 checkpoint): they went on from their own
            # epoch-8 checkpoint, training nothing again.
            # The two the SIGKILL stopped at epoch 3, unknown to that snapshot, went on as new trials from
            # their epoch-2 checkpoints: their epochs 1 and 2 are the new trials' rows, as they were.
            _assert_not_rerun(before_epochs, epochs, _finished(before_trials), label, went_on)
            if label[2] == signal.SIGKILL:
                by_id = trials.set_index("trial_id")
                for old, new in went_on.items():
                    was = before_trials.set_index("trial_id").loc[old, PARAMS]
                    assert (by_id.loc[new, PARAMS] == was).all(), (label, old, new)
        else:  # stopped before the student search: it had reported nothing
            assert before_epochs.empty, label
    assert len(snapshots[1][2][0]) >= 3  # the teacher had reported epochs 1..3 when it was killed at 4
    assert (moved / "export" / "model.pt").exists()


def test_dead_worker_is_retried_from_its_checkpoint_then_errored(tmp_path):
    """Kill a trial's worker process at a known epoch: Tune retries it from its last checkpoint
    (FailureConfig). Killed once more than `max_failures`, it is recorded as errored with its error text,
    and the search goes on."""
    spec = deep_update(
        KILL_SPEC,
        {
            "name": "w",
            "teacher": {"epochs": 2},
            "student": {"epochs": 6},
            "search": {"num_samples": 2, "max_concurrent": 1, "max_failures": 1},
        },
    )
    spec_path = tmp_path / "w.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    exp = tmp_path / "runs" / "w"
    barrier = Barrier(tmp_path / "barrier", "student", 3)
    log = tmp_path / "run.log"
    proc = start_cli("run", str(spec_path), cwd=tmp_path, log=log, env=barrier.env)
    first = barrier.wait(proc, n=1, log=log)[0]
    # `status` from another terminal while the search runs (the driver holds the experiment's lock)
    status = run_cli("status", str(exp), cwd=tmp_path, timeout=60)
    assert status.returncode == 0, status.stderr
    assert "stages: teacher done, teacher_logits done, student -, export -" in status.stdout
    assert "not finished; resume with: skd-tune run" in status.stdout
    os.kill(first, signal.SIGKILL)
    second = [p for p in barrier.wait(proc, n=2, log=log) if p != first][0]  # the retry, from its checkpoint
    os.kill(second, signal.SIGKILL)
    barrier.release()  # the other trial passes
    assert proc.wait(timeout=300) == 0, log.read_text()

    trials = pd.read_parquet(exp / "results" / "trials.parquet").set_index("trial_id")
    epochs = pd.read_parquet(exp / "results" / "epochs.parquet")
    victim = epochs.loc[epochs["pid"] == first, "trial_id"].iloc[0]
    mine = epochs[epochs["trial_id"] == victim].set_index("epoch")
    # Epochs 1 and 2, reported by the first worker, were not run again by the retry (it went on from the
    # checkpoint of epoch 2 and was killed again at epoch 3, which no worker reported).
    assert mine.index.tolist() == [1, 2] and (mine["pid"] == first).all()
    # The second kill exceeded max_failures = 1: errored, with the error text, while the other trial finished.
    assert trials.loc[victim, "status"] == "ERROR"
    assert isinstance(trials.loc[victim, "error"], str) and len(trials.loc[victim, "error"]) > 20
    others = trials.drop(index=victim)
    assert len(others) == 1 and (others["status"] == "TERMINATED").all() and (others["epochs"] == 6).all()
    assert (exp / "export" / "model.pt").exists()


def test_method_table_stage_resumes_after_sigterm_and_sigkill(tmp_path):
    """SIGKILL during KD's own search (methods.search: per_method), then stopped twice while the method
    table is retrained: SIGTERM (a batch scheduler preempting the job) while two runs wait at epoch 4, then
    SIGKILL once the two resumed runs finished and two new ones wait at epoch 2. Epochs reported before a
    stop are kept as they were (same end times: not trained again), no trial is duplicated, and the table
    ends with every method and seed exactly once."""
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
    _stop_at(tmp_path, spec_path, 9, "search_kd", 3, signal.SIGKILL, -9, n=2)
    kd_before, kd_trials_before = _reported(exp, "search_kd")
    snapshots = []
    for step, (epoch, sig, code) in enumerate(((4, signal.SIGTERM, 130), (2, signal.SIGKILL, -9))):
        text = _stop_at(tmp_path, spec_path, step, "methods", epoch, sig, code, n=2)
        if code == 130:
            assert "methods stage interrupted" in text
        snapshots.append(_reported(exp, "methods"))
        assert not (exp / "results" / "methods.parquet").exists()
    assert len(_finished(snapshots[-1][1])) >= 2

    again = run_cli("run", str(spec_path), cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    runs = pd.read_parquet(exp / "results" / "methods.parquet")
    assert sorted(zip(runs["method"], runs["seed"])) == sorted((m, s) for m in ("no-KD", "KD", "SKD") for s in (0, 1))
    assert (runs["status"] == "TERMINATED").all() and runs["test_f1"].notna().all()
    epochs = pd.read_parquet(exp / "results" / "methods_epochs.parquet")
    assert not epochs.duplicated(["trial_id", "epoch"]).any()
    assert all(sorted(g) == list(range(1, 7)) for g in epochs.groupby("trial_id")["epoch"].apply(list))
    for step, (before_epochs, before_trials) in enumerate(snapshots):
        _assert_not_rerun(before_epochs, epochs, _finished(before_trials), step)
    trials = pd.read_parquet(exp / "results" / "trials.parquet")
    assert len(trials) == 2  # the search itself was not touched
    kd = pd.read_parquet(exp / "results" / "kd_epochs.parquet")
    kd_trials = pd.read_parquet(exp / "results" / "kd_trials.parquet")
    assert len(kd_trials) == 2 and (kd_trials["status"] == "TERMINATED").all() and (kd_trials["w_skd"] == 0).all()
    assert not kd.duplicated(["trial_id", "epoch"]).any()
    assert all(sorted(g) == list(range(1, 7)) for g in kd.groupby("trial_id")["epoch"].apply(list))
    _assert_not_rerun(kd_before, kd, _finished(kd_trials_before), "search_kd")
