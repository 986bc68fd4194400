"""Tests of skd_tune.experiment.results: the Parquet tables of a search, written and re-read from tmp_path."""

from __future__ import annotations

import math
import os

import pandas as pd
import pytest

from skd_tune.experiment.results import ResultsError, ResultsTables, read_table, write_table_atomic

PARAMS = ["lr", "temperature"]


def _tables(path, metric="val_f1", mode="max", **kw) -> ResultsTables:
    return ResultsTables(path, PARAMS, metric, mode, **kw)


def _feed(tables: ResultsTables, trial_id: str, params: dict, f1s: list[float], losses: list[float] | None = None):
    for i, f1 in enumerate(f1s):
        metrics = {
            "epoch": i + 1,
            "val_f1": f1,
            "val_loss": (losses[i] if losses else 1.0 - f1),
            "train_loss": 2.0 - f1,
            "epoch_time_s": 0.5,
        }
        tables.add_epoch(trial_id, params, metrics)


def test_flush_writes_readable_parquet(tmp_path) -> None:
    tables = _tables(tmp_path)
    _feed(tables, "t1", {"lr": 0.01, "temperature": 4.0, "unsearched": 1}, [0.5, 0.7, 0.6])
    _feed(tables, "t2", {"lr": 0.1, "temperature": 2.0}, [0.8, 0.9])
    assert tables.flush(force=True) is True
    epochs = pd.read_parquet(tmp_path / "epochs.parquet")
    trials = pd.read_parquet(tmp_path / "trials.parquet")
    assert len(epochs) == 5
    assert epochs["trial_id"].tolist() == ["t1", "t1", "t1", "t2", "t2"]
    assert epochs["epoch"].tolist() == [1, 2, 3, 1, 2]
    assert epochs["val_f1"].tolist() == pytest.approx([0.5, 0.7, 0.6, 0.8, 0.9])
    assert trials["trial_id"].tolist() == ["t1", "t2"]
    assert trials["lr"].tolist() == pytest.approx([0.01, 0.1])
    assert trials["temperature"].tolist() == pytest.approx([4.0, 2.0])
    assert "unsearched" not in trials.columns  # only the searched parameters get a column
    assert trials["status"].tolist() == ["RUNNING", "RUNNING"]
    assert trials["epochs"].tolist() == [3, 2]
    assert trials["time_total_s"].tolist() == pytest.approx([1.5, 1.0])
    # read_table is the module's own reader; it agrees with pandas.
    pd.testing.assert_frame_equal(read_table(tmp_path / "trials.parquet"), trials)


def test_best_epoch_mode_max(tmp_path) -> None:
    tables = _tables(tmp_path, metric="val_f1", mode="max")
    _feed(tables, "t1", {"lr": 0.01, "temperature": 4.0}, [0.5, 0.9, 0.6], losses=[0.3, 0.2, 0.1])
    row = tables.trials_frame().iloc[0]
    assert row["best_epoch"] == 2
    assert row["best_val_f1"] == pytest.approx(0.9)
    assert row["best_val_loss"] == pytest.approx(0.2)  # other val_ columns come from the same epoch
    assert row["last_val_f1"] == pytest.approx(0.6)
    assert row["last_val_loss"] == pytest.approx(0.1)
    assert "best_train_loss" not in row.index  # only val_ metrics are summarised


def test_best_epoch_mode_min(tmp_path) -> None:
    tables = _tables(tmp_path, metric="val_loss", mode="min")
    _feed(tables, "t1", {"lr": 0.01, "temperature": 4.0}, [0.5, 0.9, 0.6], losses=[0.3, 0.2, 0.1])
    row = tables.trials_frame().iloc[0]
    assert row["best_epoch"] == 3
    assert row["best_val_loss"] == pytest.approx(0.1)
    assert row["best_val_f1"] == pytest.approx(0.6)


def test_best_epoch_skips_a_nan_epoch(tmp_path) -> None:
    tables = _tables(tmp_path, metric="val_loss", mode="min")
    _feed(tables, "t1", {"lr": 0.01, "temperature": 4.0}, [0.5, 0.9, 0.6], losses=[0.3, math.nan, 0.25])
    row = tables.trials_frame().iloc[0]
    assert row["best_epoch"] == 3
    assert row["best_val_loss"] == pytest.approx(0.25)


def test_all_nan_metric_falls_back_to_last_epoch(tmp_path) -> None:
    tables = _tables(tmp_path, metric="val_loss", mode="min")
    _feed(tables, "diverged", {"lr": 10.0, "temperature": 4.0}, [0.5, 0.5], losses=[math.nan, math.nan])
    row = tables.trials_frame().iloc[0]
    assert row["best_epoch"] == 2


def test_best_trial_per_mode(tmp_path) -> None:
    hi = _tables(tmp_path / "max", metric="val_f1", mode="max")
    lo = _tables(tmp_path / "min", metric="val_loss", mode="min")
    assert hi.best_trial() is None
    for tables in (hi, lo):
        _feed(tables, "a", {"lr": 0.1, "temperature": 1.0}, [0.6, 0.7], losses=[0.5, 0.4])
        _feed(tables, "b", {"lr": 0.2, "temperature": 2.0}, [0.95, 0.8], losses=[0.6, 0.45])
        _feed(tables, "c", {"lr": 0.3, "temperature": 3.0}, [0.1, 0.2], losses=[0.9, 0.3])
    assert hi.best_trial()["trial_id"] == "b"
    assert hi.best_trial()["best_val_f1"] == pytest.approx(0.95)
    assert lo.best_trial()["trial_id"] == "c"
    assert lo.best_trial()["lr"] == pytest.approx(0.3)


def test_duplicate_trial_epoch_keeps_the_last(tmp_path) -> None:
    tables = _tables(tmp_path)
    params = {"lr": 0.01, "temperature": 4.0}
    tables.add_epoch("t1", params, {"epoch": 1, "val_f1": 0.1})
    tables.add_epoch("t1", params, {"epoch": 2, "val_f1": 0.2})
    tables.add_epoch("t1", params, {"epoch": 2, "val_f1": 0.25})  # epoch 2 reported again
    tables.add_epoch("t2", params, {"epoch": 2, "val_f1": 0.5})  # same epoch, other trial: kept
    epochs = tables.epochs_frame()
    assert list(zip(epochs["trial_id"], epochs["epoch"])) == [("t1", 1), ("t1", 2), ("t2", 2)]
    assert epochs["val_f1"].tolist() == pytest.approx([0.1, 0.25, 0.5])
    trials = tables.trials_frame().set_index("trial_id")
    assert trials.loc["t1", "epochs"] == 2
    assert trials.loc["t1", "best_val_f1"] == pytest.approx(0.25)
    tables.flush(force=True)
    assert len(pd.read_parquet(tmp_path / "epochs.parquet")) == 3


def test_non_scalar_metrics_are_not_stored(tmp_path) -> None:
    tables = _tables(tmp_path)
    tables.add_epoch(
        "t1", {}, {"epoch": 1, "val_f1": 0.5, "config": {"lr": 1}, "hist": [1, 2], "note": "ok", "none": None}
    )
    epochs = tables.epochs_frame()
    assert "config" not in epochs.columns and "hist" not in epochs.columns
    assert epochs.loc[0, "note"] == "ok"
    tables.flush(force=True)  # and what is left writes as Parquet
    assert pd.read_parquet(tmp_path / "epochs.parquet").loc[0, "note"] == "ok"


def test_resume_reloads_what_was_written(tmp_path) -> None:
    first = _tables(tmp_path)
    _feed(first, "t1", {"lr": 0.01, "temperature": 4.0}, [0.5, 0.7])
    _feed(first, "t2", {"lr": 0.1, "temperature": 2.0}, [0.3])
    first.set_trial("t2", status="ERROR", error="boom", checkpoint_path="student/t2/checkpoint_000000")
    first.flush(force=True)

    second = _tables(tmp_path)
    pd.testing.assert_frame_equal(second.epochs_frame(), first.epochs_frame())
    pd.testing.assert_frame_equal(second.trials_frame(), first.trials_frame())
    t2 = second.trials_frame().set_index("trial_id").loc["t2"]
    assert t2["status"] == "ERROR"
    assert t2["error"] == "boom"
    assert t2["checkpoint_path"] == "student/t2/checkpoint_000000"

    # The resumed trial re-reports its last epoch and goes on: no duplicates, the new value wins.
    second.add_epoch(
        "t1",
        {"lr": 0.01, "temperature": 4.0},
        {"epoch": 2, "val_f1": 0.75, "val_loss": 0.25, "train_loss": 1.25, "epoch_time_s": 0.5},
    )
    epoch3 = {"epoch": 3, "val_f1": 0.8, "val_loss": 0.2, "train_loss": 1.2, "epoch_time_s": 0.5}
    second.add_epoch("t1", {"lr": 0.01, "temperature": 4.0}, epoch3)
    assert second.flush(force=True) is True
    epochs = pd.read_parquet(tmp_path / "epochs.parquet")
    t1 = epochs[epochs["trial_id"] == "t1"]
    assert t1["epoch"].tolist() == [1, 2, 3]
    assert t1["val_f1"].tolist() == pytest.approx([0.5, 0.75, 0.8])
    trials = pd.read_parquet(tmp_path / "trials.parquet").set_index("trial_id")
    assert trials.loc["t1", "best_epoch"] == 3
    assert trials.loc["t2", "status"] == "ERROR"


def test_stopped_early(tmp_path) -> None:
    tables = _tables(tmp_path)
    for tid in ("short", "full", "running"):
        tables.set_trial(tid, params={"lr": 0.1, "temperature": 1.0}, status="RUNNING", max_epochs=3)
    _feed(tables, "short", {"lr": 0.1, "temperature": 1.0}, [0.5])
    _feed(tables, "full", {"lr": 0.1, "temperature": 1.0}, [0.5, 0.6, 0.7])
    _feed(tables, "running", {"lr": 0.1, "temperature": 1.0}, [0.5])
    tables.set_trial("short", status="TERMINATED", max_epochs=3)
    tables.set_trial("full", status="TERMINATED", max_epochs=3)
    trials = tables.trials_frame().set_index("trial_id")
    assert trials.loc["short", "stopped_early"]
    assert not trials.loc["full", "stopped_early"]
    assert not trials.loc["running", "stopped_early"]


def test_stopped_early_survives_reload(tmp_path) -> None:
    tables = _tables(tmp_path)
    tables.set_trial("short", params={"lr": 0.1, "temperature": 1.0}, status="RUNNING", max_epochs=3)
    _feed(tables, "short", {"lr": 0.1, "temperature": 1.0}, [0.5])
    tables.set_trial("short", status="TERMINATED", max_epochs=3)
    tables.flush(force=True)
    assert bool(pd.read_parquet(tmp_path / "trials.parquet").loc[0, "stopped_early"])
    reloaded = _tables(tmp_path)
    assert bool(reloaded.trials_frame().loc[0, "stopped_early"])


def test_write_leaves_no_temporary_files(tmp_path) -> None:
    tables = _tables(tmp_path)
    _feed(tables, "t1", {"lr": 0.01, "temperature": 4.0}, [0.5])
    tables.flush(force=True)
    _feed(tables, "t1", {"lr": 0.01, "temperature": 4.0}, [0.5, 0.6])
    tables.flush(force=True)
    assert sorted(os.listdir(tmp_path)) == ["epochs.parquet", "journal.jsonl", "trials.parquet"]
    # The second write replaced the first.
    assert len(pd.read_parquet(tmp_path / "epochs.parquet")) == 2


def test_write_table_atomic_replaces_and_creates_parents(tmp_path) -> None:
    path = tmp_path / "deep" / "dir" / "x.parquet"
    write_table_atomic(pd.DataFrame({"a": [1, 2]}), path)
    write_table_atomic(pd.DataFrame({"a": [3, 4, 5], "b": ["x", "y", "z"]}), path)
    assert os.listdir(path.parent) == ["x.parquet"]
    df = pd.read_parquet(path)
    assert df["a"].tolist() == [3, 4, 5]
    assert df["b"].tolist() == ["x", "y", "z"]
    assert read_table(tmp_path / "missing.parquet") is None


def test_flush_is_rate_limited_unless_forced(tmp_path) -> None:
    tables = _tables(tmp_path, min_interval_s=3600.0)
    assert tables.flush(force=True) is False  # nothing to write yet
    assert not (tmp_path / "trials.parquet").exists()
    _feed(tables, "t1", {"lr": 0.01, "temperature": 4.0}, [0.5])
    assert tables.flush(force=True) is True
    _feed(tables, "t1", {"lr": 0.01, "temperature": 4.0}, [0.5, 0.6])
    assert tables.flush() is False  # within min_interval_s of the last write
    assert len(pd.read_parquet(tmp_path / "epochs.parquet")) == 1
    assert tables.flush(force=True) is True
    assert len(pd.read_parquet(tmp_path / "epochs.parquet")) == 2


def test_empty_tables(tmp_path) -> None:
    tables = _tables(tmp_path)
    assert tables.epochs_frame().empty
    assert list(tables.epochs_frame().columns) == ["trial_id", "epoch"]
    assert tables.trials_frame().empty
    tables.set_trial("pending", params={"lr": 0.5, "temperature": 2.0})
    row = tables.trials_frame().iloc[0]
    assert row["status"] == "PENDING"
    assert row["epochs"] == 0
    assert row["lr"] == pytest.approx(0.5)
    tables.flush(force=True)
    assert pd.read_parquet(tmp_path / "trials.parquet")["status"].tolist() == ["PENDING"]


def test_prefix_names_another_pair_of_tables(tmp_path) -> None:
    student = _tables(tmp_path)
    teacher = ResultsTables(tmp_path, [], "val_f1", "max", table="teacher")
    _feed(teacher, "teach1", {}, [0.9, 0.95])
    teacher.flush(force=True)
    assert sorted(os.listdir(tmp_path)) == ["teacher_epochs.parquet", "teacher_journal.jsonl", "teacher_trials.parquet"]
    trials = pd.read_parquet(tmp_path / "teacher_trials.parquet")
    assert trials["trial_id"].tolist() == ["teach1"]
    assert trials["best_val_f1"].tolist() == pytest.approx([0.95])
    _feed(student, "s1", {"lr": 0.1, "temperature": 2.0}, [0.7])
    student.flush(force=True)
    assert sorted(os.listdir(tmp_path)) == [
        "epochs.parquet",
        "journal.jsonl",
        "teacher_epochs.parquet",
        "teacher_journal.jsonl",
        "teacher_trials.parquet",
        "trials.parquet",
    ]
    # Each table pair reloads only its own rows.
    assert ResultsTables(tmp_path, [], "val_f1", "max", table="teacher").epochs_frame()[
        "trial_id"
    ].unique().tolist() == ["teach1"]
    assert _tables(tmp_path).epochs_frame()["trial_id"].unique().tolist() == ["s1"]


def test_records_not_yet_flushed_survive_a_kill(tmp_path) -> None:
    """A driver killed between throttled rewrites loses nothing: the journal is replayed on reopen."""
    first = _tables(tmp_path)
    _feed(first, "t1", {"lr": 0.01, "temperature": 4.0}, [0.5])
    first.flush(force=True)
    _feed(first, "t1", {"lr": 0.01, "temperature": 4.0}, [0.5, 0.6, 0.7])  # never flushed to Parquet
    first.set_trial("t1", status="TERMINATED", max_epochs=3)
    with open(tmp_path / "journal.jsonl", "a") as f:
        f.write('{"epoch": {"trial_id": "t1", "par')  # the kill cut the last record short
    assert pd.read_parquet(tmp_path / "epochs.parquet")["epoch"].tolist() == [1]

    second = _tables(tmp_path)
    assert second.epochs_frame()["epoch"].tolist() == [1, 2, 3]
    assert second.trials_frame().set_index("trial_id").loc["t1", "status"] == "TERMINATED"
    assert second.flush(force=True) is True
    assert pd.read_parquet(tmp_path / "epochs.parquet")["epoch"].tolist() == [1, 2, 3]
    # The resumed driver appends after the cut record, on a line of its own: nothing it writes is lost.
    _feed(second, "t2", {"lr": 0.02, "temperature": 2.0}, [0.4])
    second.close()
    third = _tables(tmp_path)
    assert third.epochs_frame().groupby("trial_id")["epoch"].max().to_dict() == {"t1": 3, "t2": 1}
    third.close()


def test_a_damaged_journal_line_is_an_error_naming_it(tmp_path) -> None:
    tables = _tables(tmp_path)
    _feed(tables, "t1", {"lr": 0.01, "temperature": 4.0}, [0.5, 0.6])
    tables.close()
    lines = (tmp_path / "journal.jsonl").read_text().splitlines()
    lines[0] = "\x00" * 40  # e.g. a block of zeros after a crash of the disk, not a kill mid-write
    (tmp_path / "journal.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(
        ResultsError, match=r"journal\.jsonl: line 1 is not a record .*restore it from a copy, or move it aside"
    ):
        _tables(tmp_path)


def test_damaged_parquet_without_journal_is_a_clear_error(tmp_path) -> None:
    from skd_tune.experiment.results import ResultsError

    (tmp_path / "trials.parquet").write_bytes(b"PAR1 this is not a whole parquet file")
    with pytest.raises(ResultsError, match=r"trials\.parquet: not a readable Parquet file .* move it aside"):
        _tables(tmp_path)


def test_dropped_trial_stays_dropped_after_reload(tmp_path) -> None:
    first = _tables(tmp_path)
    _feed(first, "kept", {"lr": 0.01, "temperature": 4.0}, [0.5, 0.6])
    _feed(first, "lost", {"lr": 0.02, "temperature": 2.0}, [0.4])
    first.drop_trial("lost")
    first.flush(force=True)
    assert pd.read_parquet(tmp_path / "trials.parquet")["trial_id"].tolist() == ["kept"]
    assert set(pd.read_parquet(tmp_path / "epochs.parquet")["trial_id"]) == {"kept"}
    second = _tables(tmp_path)
    assert second.trial_ids() == ["kept"] and set(second.epochs_frame()["trial_id"]) == {"kept"}


def test_cost_columns_hold_each_trial_s_cost(tmp_path) -> None:
    from skd_tune.names import COST_METRICS

    tables = _tables(tmp_path)
    costs = {
        "t1": dict(zip(COST_METRICS, (1210.0, 1184.0, 0.03, 0.05, 7637.0))),
        "t2": dict(zip(COST_METRICS, (4810.0, 4736.0, 0.04, 0.09, 22000.0))),
    }
    for trial_id, f1s in (("t1", [0.5, 0.7]), ("t2", [0.8])):
        for i, f1 in enumerate(f1s):  # the trainable reports its cost with every epoch
            tables.add_epoch(
                trial_id, {"lr": 0.01, "temperature": 4.0}, {"epoch": i + 1, "val_f1": f1, **costs[trial_id]}
            )
    tables.set_trial("t3", params={"lr": 0.1, "temperature": 1.0})  # not reported yet: no cost
    tables.flush(force=True)
    trials = pd.read_parquet(tmp_path / "trials.parquet").set_index("trial_id")
    for name in COST_METRICS:
        assert trials[name].dtype == "float64"
        assert trials.loc["t1", name] == costs["t1"][name] and trials.loc["t2", name] == costs["t2"][name]
        assert math.isnan(trials.loc["t3", name])
    assert "best_params" not in trials and "last_macs" not in trials  # plain columns, named as in COST_METRICS
    reloaded = _tables(tmp_path).trials_frame().set_index("trial_id")  # from the journal
    assert reloaded.loc["t2", "latency_ms_b64"] == pytest.approx(0.09)


def test_no_cost_columns_without_a_cost(tmp_path) -> None:
    tables = _tables(tmp_path)
    _feed(tables, "t1", {"lr": 0.01, "temperature": 4.0}, [0.5])  # a teacher's epochs carry no cost
    assert "params" not in tables.trials_frame()
