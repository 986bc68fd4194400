"""The Optuna study of each search on disk (`optuna/<stage>.log`, an Optuna journal file) and honest
pruning: trials the scheduler stopped early are PRUNED in the study, with their per-epoch values."""

from __future__ import annotations

import os
import shutil

import optuna
import pandas as pd
import pytest
import yaml

from skd_tune.reporting import EPOCHS_KEY
from skd_tune.spec import Distribution, SearchSpec
from skd_tune.tune.search import CONTINUES, make_searcher

from .conftest import TINY_SPEC, Barrier, deep_update, run_cli, start_cli
from .test_experiment_storage import BUCKET, s3  # noqa: F401  (the moto S3 server fixture)

SPACE = {"lr": Distribution(loguniform=(1e-3, 1e-1)), "w_kd": Distribution(uniform=(0, 1))}
State = optuna.trial.TrialState


def _load(path, name="student") -> optuna.Study:
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    return optuna.load_study(study_name=name, storage=storage)


def _searcher(path, honest=True):
    limiter = make_searcher(SearchSpec(max_concurrent=4), SPACE, seed=0, study_name="student", max_epochs=3,
                            honest_pruning=honest)  # fmt: skip
    limiter.searcher.attach(path)
    return limiter.searcher


def _run(searcher, trial_id, epochs, error=False, per_report=1):
    """As Ray does: each result but the last to on_trial_result, the last (the scheduler's STOP) to
    on_trial_complete; an errored trial completes with no result. A result carries `per_report` epochs,
    as a trial's reports do (reporting.EPOCHS_KEY, the last epoch's metrics at the top)."""
    searcher.suggest(trial_id)
    metrics = [{"val_f1": 0.5 + epoch / 10, "epoch": epoch} for epoch in range(1, epochs + 1)]
    batches = [metrics[i : i + per_report] for i in range(0, epochs, per_report)]
    results = [{**b[-1], EPOCHS_KEY: b, "training_iteration": n} for n, b in enumerate(batches, 1)]
    for result in results[:-1]:
        searcher.on_trial_result(trial_id, result)
    searcher.on_trial_complete(trial_id, None if error else results[-1], error=error)


def test_every_epoch_of_a_report_is_an_intermediate_value(tmp_path):
    """A trial that reports several epochs at once (short epochs) gives Optuna each epoch's value; a
    trial stopped before its last epoch is PRUNED even when its one report carried all its epochs."""
    searcher = _searcher(tmp_path / "optuna" / "student.log")
    _run(searcher, "full", 3, per_report=2)  # reports (1, 2), then (3)
    _run(searcher, "stopped", 2, per_report=2)  # one report, (1, 2), that ended it
    full, stopped = _load(tmp_path / "optuna" / "student.log").trials
    assert full.state == State.COMPLETE and full.intermediate_values == pytest.approx({1: 0.6, 2: 0.7, 3: 0.8})
    assert stopped.state == State.PRUNED and stopped.intermediate_values == pytest.approx({1: 0.6, 2: 0.7})


@pytest.mark.parametrize("honest", [True, False])
def test_trials_stopped_early_are_pruned_with_their_epochs_and_errors_fail(tmp_path, honest):
    searcher = _searcher(tmp_path / "optuna" / "student.log", honest)
    _run(searcher, "full", 3)
    _run(searcher, "stopped", 1)
    _run(searcher, "errored", 2, error=True)
    trials = _load(tmp_path / "optuna" / "student.log").trials
    assert [t.state for t in trials] == [State.COMPLETE, State.PRUNED if honest else State.COMPLETE, State.FAIL]
    assert trials[0].value == pytest.approx(0.8) and trials[0].intermediate_values == pytest.approx(
        {1: 0.6, 2: 0.7, 3: 0.8}
    )
    assert trials[1].intermediate_values == pytest.approx({1: 0.6})
    assert trials[1].value == pytest.approx(0.6)  # a PRUNED trial's value, for Optuna: its last intermediate one


def test_a_restored_searcher_continues_the_same_study_where_the_experiment_now_is(tmp_path):
    """Ray restores its last snapshot of the searcher: the trials proposed after it (`late`) are handed
    to the next trials Ray creates, so the study keeps one Optuna trial per Ray trial; the study file is
    the one `attach` names (the experiment moved: the old path is never written)."""
    old, new = tmp_path / "old" / "student.log", tmp_path / "new" / "student.log"
    first = _searcher(old)
    _run(first, "a", 3)
    first.suggest("b")
    first.on_trial_result("b", {"val_f1": 0.6, "epoch": 1})
    first.save(str(tmp_path / "searcher.pkl"))  # Ray's snapshot
    late = first.suggest("late")  # proposed after the snapshot, then the driver died
    new.parent.mkdir()
    shutil.move(old, new)
    shutil.rmtree(old.parent)

    second = _searcher(None)  # what tuner.pkl gives back
    second.attach(new)
    second.restore(str(tmp_path / "searcher.pkl"))
    second.on_trial_result("b", {"val_f1": 0.7, "epoch": 2})
    second.on_trial_complete("b", {"val_f1": 0.8, "epoch": 3})
    # The orphan, adopted: its parameters, and the Ray trial whose checkpoints the new one goes on from.
    assert second.suggest("c") == {**late, CONTINUES: ["late"]}
    second.on_trial_complete("c", {"val_f1": 0.9, "epoch": 3})
    _run(second, "d", 1)
    assert not old.parent.exists()
    trials = _load(new).trials
    assert [t.state for t in trials] == [State.COMPLETE, State.COMPLETE, State.COMPLETE, State.PRUNED]
    assert trials[1].intermediate_values == pytest.approx({1: 0.6, 2: 0.7, 3: 0.8})
    assert trials[2].params == late and trials[2].value == pytest.approx(0.9)


ASHA_SPEC = deep_update(
    TINY_SPEC,
    {
        "student": {"epochs": 4},
        "search": {"num_samples": 8, "scheduler": {"name": "asha", "grace_period": 1, "reduction_factor": 2}},
    },
)


def _trials(exp):
    return pd.read_parquet(exp / "results" / "trials.parquet")


@pytest.mark.slow
def test_a_run_leaves_its_study_on_disk_with_the_stopped_trials_pruned(tmp_path, write_spec):
    spec = write_spec(ASHA_SPEC)
    run_cli("run", str(spec), cwd=tmp_path)
    exp = tmp_path / "runs" / ASHA_SPEC["name"]
    table = _trials(exp).set_index("trial_id")
    study = _load(exp / "optuna" / "student.log")
    number = {k.split(":", 1)[1]: v for k, v in study.user_attrs.items() if k.startswith("ray_trial:")}
    assert len(study.trials) == len(table) == ASHA_SPEC["search"]["num_samples"]
    stopped = table["epochs"] < table["max_epochs"]
    assert stopped.any() and (~stopped).any()
    for trial_id, row in table.iterrows():
        trial = study.trials[number[trial_id]]
        assert len(trial.intermediate_values) == row["epochs"]
        if stopped[trial_id]:
            assert trial.state == State.PRUNED
        else:  # Ray tells Optuna the metric of the last result: the last epoch's val_f1
            assert trial.state == State.COMPLETE and trial.value == pytest.approx(row["last_val_f1"])


@pytest.mark.slow
def test_a_resumed_search_continues_its_study_with_no_duplicate_trials(tmp_path, write_spec):
    spec = write_spec(deep_update(ASHA_SPEC, {"name": "resume", "search": {"checkpoint_interval_s": 0}}))
    barrier = Barrier(tmp_path / "barrier", "student", 2)
    log = tmp_path / "run-1.log"
    proc = start_cli("run", str(spec), cwd=tmp_path, log=log, env=barrier.env)
    barrier.wait(proc, log=log)
    proc.kill()  # SIGKILL: Ray's searcher snapshot may be older than the journal
    assert proc.wait(timeout=120) == -9
    moved = tmp_path / "moved"
    shutil.move(tmp_path / "runs" / "resume", moved)  # the experiment moved, too
    run_cli("run", str(moved), cwd=tmp_path)
    study = _load(moved / "optuna" / "student.log")
    n = ASHA_SPEC["search"]["num_samples"]
    assert len(study.trials) == n and len(_trials(moved)) == n
    assert all(t.state.is_finished() for t in study.trials)
    assert len({tuple(sorted(t.params.items())) for t in study.trials}) == n


@pytest.mark.slow
def test_on_s3_the_study_travels_with_the_experiment(s3, tmp_path):  # noqa: F811 (the fixture)
    """The journal is written in the local mirror and uploaded (after each trial and when the stage
    ends): the bucket alone (mirror deleted) holds the study with every trial."""
    spec = deep_update(ASHA_SPEC, {"name": "s3study", "storage": f"s3://{BUCKET}/runs", "search": {"num_samples": 3}})
    spec_path = tmp_path / "s3study.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    first = run_cli("run", str(spec_path), cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    shutil.rmtree(os.environ["SKD_TUNE_CACHE"])
    copy = tmp_path / "student.log"
    copy.write_bytes(s3.get_object(Bucket=BUCKET, Key="runs/s3study/optuna/student.log")["Body"].read())
    study = _load(copy)
    assert len(study.trials) == 3 and all(t.state.is_finished() for t in study.trials)
