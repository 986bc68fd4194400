"""The experiment package: state, the frozen spec, best trial and counts, damaged files, on real files."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
import yaml

from skd_tune.errors import NotAnExperiment, PipelineError, ResultsError
from skd_tune.experiment import (
    Experiment,
    ResultsTables,
    State,
    best_trial,
    frozen_spec,
    location_of,
    prepare,
    resolve_spec,
    trial_counts,
)
from skd_tune.spec import validate_spec

from .conftest import TINY_SPEC, deep_update


def _spec(**changes):
    return validate_spec(deep_update(TINY_SPEC, changes))


def test_state_round_trip_and_damaged_state_names_the_file(tmp_path):
    exp = Experiment(tmp_path)
    assert exp.state() == State()  # not written yet: no stage done
    exp.mark_started("student")
    exp.mark_done("teacher", checkpoint="teacher/x", metrics={"val_f1": 0.9})
    again = Experiment(tmp_path).state()
    assert again.done("teacher")["checkpoint"] == "teacher/x" and "done_at" in again.done("teacher")
    assert again.done("student") is None and "student" in again.started
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # written atomically
    (tmp_path / "state.json").write_text('{"stages": {"teacher": ')
    with pytest.raises(NotAnExperiment, match=r"state\.json: not valid JSON .*Delete it and run `skd-tune run`"):
        exp.state()


def test_best_trial_ties_modes_and_nan():
    trials = pd.DataFrame(
        {
            "trial_id": ["c", "a", "b", "d"],
            "best_val_f1": [0.9, 0.9, 0.5, np.nan],
            "best_val_loss": [0.3, 0.2, 0.1, np.nan],
        }
    )
    assert best_trial(trials, "val_f1", "max")["trial_id"] == "a"  # a tie: the first by trial id
    assert best_trial(trials, "val_loss", "min")["trial_id"] == "b"
    assert best_trial(trials.assign(best_val_f1=np.nan), "val_f1", "max") is None
    assert best_trial(None, "val_f1", "max") is None
    assert best_trial(trials.drop(columns="best_val_f1"), "val_f1", "max") is None


def test_trial_counts_fill_the_trials_not_created_yet():
    trials = pd.DataFrame({"trial_id": ["a", "b", "c"], "status": ["TERMINATED", "RUNNING", "ERROR"]})
    assert trial_counts(trials, 5) == {"TERMINATED": 1, "RUNNING": 1, "PENDING": 2, "ERROR": 1}
    assert trial_counts(None, 4) == {"TERMINATED": 0, "RUNNING": 0, "PENDING": 4, "ERROR": 0}


def test_prepare_new_resume_changed_and_foreign_directories(tmp_path):
    spec = _spec(storage=str(tmp_path / "runs"))
    exp = Experiment.open(location_of(spec))
    assert prepare(exp, spec) is False
    assert frozen_spec(exp) == spec
    before = {p.name: p.stat().st_mtime_ns for p in exp.root.iterdir()}
    assert prepare(exp, spec) is True  # a matching experiment is not written to
    assert {p.name: p.stat().st_mtime_ns for p in exp.root.iterdir()} == before
    exp.mark_done("teacher", checkpoint="x")
    changed = _spec(storage=str(tmp_path / "runs"), student={"epochs": 9})
    with pytest.raises(PipelineError, match=r"different spec; fields that differ: student\.epochs: 3 -> 9\. Either"):
        prepare(exp, changed)
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    with pytest.raises(PipelineError, match=r"mine exists and is not an skd-tune experiment .*nothing was written"):
        prepare(Experiment(foreign), spec)
    assert sorted(os.listdir(foreign)) == ["notes.txt"]


def test_frozen_spec_is_read_without_its_data_root_and_a_moved_experiment_resolves_in_place(tmp_path, monkeypatch):
    spec = _spec(storage=str(tmp_path / "runs"), data={"source": "npz", "root": "relative/data.npz"})
    exp = Experiment.open(location_of(spec))
    prepare(exp, spec)
    monkeypatch.chdir(tmp_path)  # the data root does not exist from here: the frozen spec is still read
    assert frozen_spec(Experiment.existing(exp.root)).data.root == "relative/data.npz"
    moved = tmp_path / "elsewhere" / "renamed"
    moved.parent.mkdir()
    exp.root.rename(moved)
    resolved = resolve_spec(moved)
    assert resolved.name == "renamed" and resolved.storage == str(moved.parent)
    (moved / "spec.yaml").write_text(yaml.safe_dump({"name": "x", "student": {"epochs": -1}}))
    with pytest.raises(NotAnExperiment, match=r"spec\.yaml: not a valid skd-tune spec .*student\.epochs"):
        frozen_spec(Experiment.existing(moved))


def test_existing_refuses_what_is_not_an_experiment(tmp_path):
    with pytest.raises(NotAnExperiment, match=r"missing: no such directory\. Give the directory of an experiment"):
        Experiment.existing(tmp_path / "missing")
    with pytest.raises(NotAnExperiment, match=r"not an skd-tune experiment \(it has no spec\.yaml\)"):
        Experiment.existing(tmp_path)


def test_damaged_teacher_logits_are_derived_and_say_so(tmp_path):
    exp = Experiment(tmp_path)
    logits = {s: np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32) for s in ("train", "val", "test")}
    exp.save_teacher_logits(logits)
    np.testing.assert_array_equal(exp.load_teacher_logits()["val"], logits["val"])
    train = exp.logits_dir / "train.npy"
    train.write_bytes(train.read_bytes()[:60])  # truncated, as by a full disk
    said = []
    assert exp.load_teacher_logits(said.append) is None
    assert len(said) == 1 and "train.npy is missing or damaged" in said[0] and "recomputing" in said[0]


def test_damaged_tables_are_rebuilt_from_their_journal(tmp_path):
    exp = Experiment(tmp_path)
    tables = exp.tables("student", ["lr"], "val_f1", "max")
    for epoch in (1, 2):
        tables.add_epoch("t1", {"lr": 0.1}, {"epoch": epoch, "val_f1": 0.5 + epoch / 10})
    tables.set_trial("t1", status="TERMINATED", max_epochs=2)
    tables.flush(force=True)
    tables.close()
    trials_file = tmp_path / "results" / "trials.parquet"
    trials_file.write_bytes(b"PAR1 cut short")
    with pytest.raises(
        ResultsError, match=r"trials\.parquet: not a readable Parquet file .*rebuilds it from its journal"
    ):
        exp.trials()
    said = []
    exp.repair_tables({"student": ["lr"], "teacher": [], "methods": []}, "val_f1", "max", said.append)
    assert said == ["rebuilt the damaged results/trials.parquet and results/epochs.parquet from results/journal.jsonl"]
    rebuilt = exp.trials()
    assert rebuilt["trial_id"].tolist() == ["t1"] and rebuilt["best_val_f1"].iloc[0] == pytest.approx(0.7)
    said.clear()
    exp.repair_tables({"student": ["lr"]}, "val_f1", "max", said.append)
    assert said == []  # intact tables are left alone


def test_results_files_round_trip_and_a_damaged_one_names_itself(tmp_path):
    exp = Experiment(tmp_path)
    assert exp.result("data") is None and exp.result("method_summary") is None
    exp.write_result("data", {"label_bits_train": 1.5})
    exp.write_result("method_summary", pd.DataFrame({"method": ["SKD"], "n": [3]}))
    assert exp.result("data") == {"label_bits_train": 1.5}
    assert exp.result("method_summary")["method"].tolist() == ["SKD"]
    (tmp_path / "results" / "data.json").write_text("{")
    with pytest.raises(ResultsError, match=r"data\.json: not valid JSON .*delete it and run `skd-tune run"):
        exp.result("data")


def test_tables_of_each_stage_have_their_own_files(tmp_path):
    for table, name in (
        ("student", "trials.parquet"),
        ("teacher", "teacher_trials.parquet"),
        ("methods", "methods_trials.parquet"),
    ):
        t = ResultsTables(tmp_path, [], "val_f1", "max", table=table)
        t.set_trial("x", status="RUNNING")
        t.flush(force=True)
        t.close()
        assert (tmp_path / name).exists()
    assert json.loads((tmp_path / "teacher_journal.jsonl").read_text().splitlines()[0])["trial"]["trial_id"] == "x"
