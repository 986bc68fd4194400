"""The Ray layer's parts on their own: callbacks (tables, progress line), the signal handling, the
sampler and scheduler registries and the search-space translation. Trials here are plain objects with
the attributes Ray Tune's callbacks read; the end-to-end runs exercise them under Ray Tune."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
from types import SimpleNamespace

import optuna
import pytest
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

from skd_tune import names
from skd_tune.experiment import ResultsTables
from skd_tune.spec import Distribution, SearchSpec
from skd_tune.tune import SAMPLERS, SCHEDULERS, Interruption, make_searcher
from skd_tune.tune.callbacks import ProgressCallback, ResultsCallback
from skd_tune.tune.signals import SignalCallback


def _trial(trial_id: str, status: str = "RUNNING", **config):
    return SimpleNamespace(trial_id=trial_id, status=status, config=config, error_file=None)


def test_results_callback_feeds_the_tables_and_pickles_to_nothing(tmp_path):
    tables = ResultsTables(tmp_path, ["lr"], "val_f1", "max")
    cb = ResultsCallback(tables, max_epochs=2)
    t = _trial("t1", lr=0.1)
    cb.on_trial_start(0, [t], t)
    for epoch in (1, 2):
        result = {"epoch": epoch, "val_f1": 0.5 + epoch / 10, "training_iteration": epoch, "config": {"lr": 0.1}}
        cb.on_trial_result(0, [t], t, result)
    cb.on_trial_complete(0, [t], t)
    trials, epochs = tables.trials_frame(), tables.epochs_frame()
    assert trials.loc[0, "status"] == "TERMINATED" and trials.loc[0, "best_val_f1"] == pytest.approx(0.7)
    assert "training_iteration" not in epochs and "config" not in epochs  # Ray's bookkeeping is left out
    assert (tmp_path / "trials.parquet").exists()  # flushed at the trial's end
    assert pickle.loads(pickle.dumps(cb)).__dict__ == {}  # Tune pickles it with the experiment: nothing of this run
    tables.close()


def test_progress_lines_only_for_finished_trials_and_the_stage_end():
    lines = []
    best = {"trial_id": "t2", "best_val_f1": 0.91234, "lr": 0.012345}
    cb = ProgressCallback("student", 4, "val_f1", ["lr"], lambda: best, lines.append)
    trials = [_trial("t1", lr=0.02), _trial("t2", lr=0.012345)]
    cb.on_trial_start(0, trials, trials[0])
    cb.on_trial_result(0, trials, trials[0], {"val_f1": 0.8})
    cb.on_trial_result(0, trials, trials[0], {"val_f1": 0.85})
    assert lines == []  # no line per status change or result: the summary comes at most every 30 s
    trials[0].status = "TERMINATED"
    cb.on_trial_complete(0, trials, trials[0])
    assert lines == ["[student] trial t1 done: val_f1 0.8500 (lr=0.02)"]
    cb.on_experiment_end(trials)
    assert (
        lines[-1] == "[student] trials 1/4 done, 1 running, 2 pending, 0 errored | best val_f1 0.9123 (t2: lr=0.01235)"
    )
    assert len(lines) == 2


def test_interruption_forwards_to_tune_and_restores_the_handlers():
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    seen = []

    def tune_handler(signum, frame):
        seen.append(signum)

    with Interruption() as interruption:
        signal.signal(signal.SIGINT, tune_handler)  # what Tune does when fit() starts
        SignalCallback(interruption).setup()  # ... and our callback then chains in front of it
        os.kill(os.getpid(), signal.SIGTERM)
        assert interruption.interrupted and seen == [signal.SIGINT]  # Tune's graceful stop, as for Ctrl-C
        with pytest.raises(KeyboardInterrupt):  # a second SIGTERM stops at once
            os.kill(os.getpid(), signal.SIGTERM)
        interruption.stage_ended()
    assert {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)} == before


def test_a_signal_outside_a_tune_stage_stops_at_once():
    with Interruption():
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)


def test_registries_have_exactly_the_spec_s_names():
    from skd_tune.curriculum import PACING
    from skd_tune.data import SOURCES
    from skd_tune.models import MODELS
    from skd_tune.serve import FORMATS

    assert list(SAMPLERS) == list(names.SAMPLERS) and list(SCHEDULERS) == list(names.SCHEDULERS)
    assert list(MODELS) == list(names.MODELS) and list(PACING) == list(names.PACINGS)
    assert list(SOURCES) == list(names.SOURCES) and list(FORMATS) == list(names.EXPORT_FORMATS)


@pytest.mark.parametrize("name", names.SAMPLERS)
def test_each_sampler_is_seeded(name):
    a, b = SAMPLERS[name](3), SAMPLERS[name](3)
    assert isinstance(a, optuna.samplers.BaseSampler) and type(a) is type(b)
    dist = {"x": optuna.distributions.FloatDistribution(0, 1)}
    values = []
    for sampler in (a, b):
        study = optuna.create_study(sampler=sampler)
        values.append(study.ask(dist).params["x"])
    assert values[0] == values[1]


def test_schedulers_from_the_spec():
    asha = SCHEDULERS["asha"](SearchSpec(scheduler={"name": "asha", "grace_period": 2, "reduction_factor": 3}), 20)
    assert isinstance(asha, ASHAScheduler) and asha._max_t == 20
    assert isinstance(SCHEDULERS["fifo"](SearchSpec(), 20), FIFOScheduler)


def test_the_search_space_is_translated_once_for_optuna(tmp_path):
    space = {
        "lr": Distribution(loguniform=(1e-3, 1e-1)),
        "batch_size": Distribution(int=(32, 128)),
        "curriculum.pacing": Distribution(choice=["none", "root"]),
        "w_kd": Distribution(uniform=(0, 1)),
    }
    optuna_space = {k: d.to_optuna() for k, d in space.items()}
    assert optuna_space["lr"] == optuna.distributions.FloatDistribution(1e-3, 1e-1, log=True)
    assert optuna_space["batch_size"] == optuna.distributions.IntDistribution(32, 128)  # inclusive, as the spec
    assert optuna_space["curriculum.pacing"] == optuna.distributions.CategoricalDistribution(["none", "root"])
    searcher = make_searcher(SearchSpec(max_concurrent=3), space, seed=0, max_epochs=3)
    searcher.searcher.attach(tmp_path / "optuna" / "student.log")
    assert searcher.max_concurrent == 3
    config = searcher.suggest("trial-1")
    assert set(config) == set(space) and 32 <= config["batch_size"] <= 128 and isinstance(config["batch_size"], int)
    assert make_searcher(SearchSpec(), {}, seed=0, max_epochs=3) is None  # no space: one trial of the spec's own values


def test_a_multi_objective_searcher_gets_every_objective_and_the_method_searches_one(tmp_path):
    """With objectives, OptunaSearch holds lists of metrics and modes over a multi-objective study (NSGA-II
    here); its Pareto front (Optuna's best_trials) is pareto.py's front of the same values. Without them
    (the KD / no-KD searches of the same spec), one metric."""
    import pandas as pd

    from skd_tune.pareto import pareto_front
    from skd_tune.spec import Spec
    from skd_tune.stages import MethodSearchStage, StudentStage
    from skd_tune.stages.student import _objectives_line

    from .conftest import TINY_SPEC, deep_update

    objectives = [{"metric": "val_f1", "mode": "max"}, {"metric": "params", "mode": "min"}]
    spec = Spec.model_validate(deep_update(TINY_SPEC, {"search": {"sampler": "nsga2", "objectives": objectives}}))
    s, space = spec.search, {"lr": Distribution(loguniform=(1e-3, 1e-1)), "w_kd": Distribution(uniform=(0, 1))}
    assert (
        StudentStage().objectives(spec) == s.objectives and MethodSearchStage("search_kd", "KD").objectives(spec) == ()
    )
    limiter = make_searcher(s, space, seed=0, objectives=StudentStage().objectives(spec), max_epochs=3)
    optuna_search = limiter.searcher
    optuna_search.attach(tmp_path / "student.log")
    assert optuna_search.metric == ["val_f1", "params"] and optuna_search.mode == ["max", "min"]
    assert isinstance(optuna_search._sampler, optuna.samplers.NSGAIISampler)
    study = optuna_search._study()
    assert study.directions == [optuna.study.StudyDirection.MAXIMIZE, optuna.study.StudyDirection.MINIMIZE]
    rows = []
    for i in range(8):
        config = limiter.suggest(f"t{i}")  # each completed before the next: never over max_concurrent
        result = {"val_f1": round(0.5 + config["w_kd"] / 2, 2), "params": int(1000 * config["lr"])}
        limiter.on_trial_complete(f"t{i}", {**result, "training_iteration": 1})  # multi-objective: no pruning
        rows.append({"trial_id": f"t{i}", "status": "TERMINATED", "epochs": 3, "max_epochs": 3, **result})
    assert len(rows) == 8 and [t.values for t in study.trials] == [[r["val_f1"], r["params"]] for r in rows]
    trials = pd.DataFrame(rows).rename(columns={"val_f1": "best_val_f1"})
    front = pareto_front(trials, s.objectives)
    assert sorted(t.number for t in study.best_trials) == sorted(int(t[1:]) for t in front["trial_id"])
    single = make_searcher(s, space, seed=0, max_epochs=3).searcher  # what MethodSearchStage's searches get
    single.attach(tmp_path / "search_kd.log")
    assert single.metric == "val_f1" and single.mode == "max" and len(single._study().directions) == 1
    assert _objectives_line("student", s.objectives, "asha") == (
        "[student] 2 objectives (val_f1 max, params min); ASHA stops trials on val_f1 alone, so a trial it stops "
        "early is not on the front; scheduler: fifo avoids that"
    )
    assert "every trial trains all its epochs" in _objectives_line("student", s.objectives, "fifo")


def test_importing_the_stage_list_loads_neither_torch_nor_ray():
    code = "import sys, skd_tune.stages, skd_tune.status; print(sorted({'torch', 'ray'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_state_snapshot_cut_short_by_a_kill_is_set_aside_for_the_one_before(tmp_path):
    from skd_tune.experiment import Experiment
    from skd_tune.tune.stage import set_aside_damaged_state

    tune_dir = tmp_path / "student"
    tune_dir.mkdir()
    old, new = "2026-11-30_10-00-00", "2026-11-30_11-00-00"
    (tune_dir / f"experiment_state-{old}.json").write_text('{"trial_data": []}')
    (tune_dir / f"searcher-state-{old}.pkl").write_bytes(b"old")
    (tune_dir / f"experiment_state-{new}.json").write_text("")  # the kill came mid-write
    (tune_dir / f"searcher-state-{new}.pkl").write_bytes(b"new")
    said = []
    assert set_aside_damaged_state(Experiment(tmp_path), "student", said.append) == 1
    assert sorted(p.name for p in tune_dir.iterdir()) == [
        f"experiment_state-{old}.json",
        f"experiment_state-{new}.json.damaged",
        f"searcher-state-{old}.pkl",
        f"searcher-state-{new}.pkl.damaged",
    ]
    assert said == [
        f"[student] Ray Tune's state snapshot experiment_state-{new}.json was cut short by a killed driver; "
        "resuming from the snapshot before it (its files are kept as *.damaged)"
    ]
    assert set_aside_damaged_state(Experiment(tmp_path), "student", said.append) == 0  # the rest is whole
    assert set_aside_damaged_state(Experiment(tmp_path), "teacher", said.append) == 0  # no Tune experiment yet
