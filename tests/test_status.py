"""`skd-tune status` read from the files alone: an experiment written with the experiment package."""

from __future__ import annotations

import pandas as pd
import pytest

from skd_tune.errors import NotAnExperiment, ResultsError
from skd_tune.experiment import Experiment, location_of, prepare
from skd_tune.spec import validate_spec
from skd_tune.status import experiment_status, format_status

from .conftest import TINY_SPEC, deep_update


@pytest.fixture
def exp(tmp_path):
    spec = validate_spec(deep_update(TINY_SPEC, {"storage": str(tmp_path / "runs"), "search": {"num_samples": 5}}))
    exp = Experiment.open(location_of(spec))
    prepare(exp, spec)
    return exp


def test_status_of_a_search_under_way(exp):
    exp.mark_done("teacher", checkpoint="teacher/x", metrics={"val_f1": 0.99})
    bits = {"bits": 0.4321, "per_class": {"0-4": 0.5, "5-9": 0.3642}, "max_bits": 2.3219}
    exp.mark_done("teacher_logits", test_metrics={"f1": 0.98}, subclass_bits=bits)
    tables = exp.tables("student", ["temperature", "w_skd", "w_kd", "lr"], "val_f1", "max")
    params = {"temperature": 2.5, "w_skd": 0.5, "w_kd": 0.1, "lr": 0.01}
    for trial_id, f1, status in (("a", 0.8, "TERMINATED"), ("b", 0.9, "RUNNING"), ("c", 0.7, "ERROR")):
        tables.add_epoch(trial_id, params, {"epoch": 1, "val_f1": f1})
        tables.set_trial(trial_id, status=status, max_epochs=3)
    tables.flush(force=True)
    tables.close()
    exp.write_result("data", {"label_bits_train": 2.3217})
    st = experiment_status(exp.root)
    assert st.stages_done == ["teacher", "teacher_logits"] and not st.finished
    assert st.counts == {"TERMINATED": 1, "RUNNING": 1, "PENDING": 2, "ERROR": 1}
    assert st.best["trial_id"] == "b"
    text = format_status(st)
    assert (
        "stages: teacher done, teacher_logits done, student -, export -, search_kd -, search_nokd -, methods -" in text
    )
    assert "student trials: 1/5 terminated, 1 running, 2 pending, 1 errored" in text
    assert "H(S|C) = 2.322 bits" in text
    assert "beyond its class probabilities: I_T(S;X|C) = 0.432 bits per training sample" in text
    assert "best so far: b val_f1 0.9000 (epoch 1): temperature=2.5, w_skd=0.5, w_kd=0.1, lr=0.01" in text
    assert text.endswith(f"not finished; resume with: skd-tune run {exp.root}")
    assert "Pareto" not in text  # one objective: no front


def test_status_of_a_new_experiment_and_of_damaged_files(exp):
    st = experiment_status(exp.root)
    assert st.stages_done == [] and st.counts["PENDING"] == 5 and st.best is None
    (exp.results_dir).mkdir(exist_ok=True)
    (exp.results_dir / "trials.parquet").write_bytes(b"PAR1 cut")
    with pytest.raises(ResultsError, match=r"trials\.parquet: not a readable Parquet file"):
        experiment_status(exp.root)
    (exp.root / "state.json").write_text("{")
    with pytest.raises(NotAnExperiment, match=r"state\.json: not valid JSON"):
        experiment_status(exp.root)


def test_finished_experiment_shows_its_method_table(exp):
    for stage in ("teacher", "teacher_logits", "student"):
        exp.mark_done(stage)
    exp.mark_done("export", test_metrics={"f1": 0.95}, path="export")
    exp.mark_done("methods", seeds=[0])
    summary = pd.DataFrame(
        [
            {
                "method": m,
                "n": 1,
                **{f"{k}_{s}": 0.9 for k in ("f1", "accuracy", "auc", "precision", "recall") for s in ("mean", "std")},
            }
            for m in ("no-KD", "KD", "SKD")
        ]
    )
    exp.write_result("method_summary", summary)
    text = format_status(experiment_status(exp.root))
    assert "exported:" in text and "(test f1 0.9500)" in text and "F1 gains: SKD - KD +0.00 points" in text
    assert "not finished" not in text


def test_status_lists_the_pareto_front_of_a_multi_objective_search(tmp_path):
    from skd_tune.experiment import write_table_atomic
    from skd_tune.pareto import pareto_front

    objectives = [{"metric": "val_f1", "mode": "max"}, {"metric": "params", "mode": "min"}]
    changes = {"storage": str(tmp_path / "runs"), "search": {"num_samples": 5, "objectives": objectives}}
    spec = validate_spec(deep_update(TINY_SPEC, changes))
    exp = Experiment.open(location_of(spec))
    prepare(exp, spec)
    space = list(spec.search.space)
    tables = exp.tables("student", space, "val_f1", "max")
    # (trial, best val_f1, params, epochs): c is dominated by a; d was stopped early; e is still running
    for trial_id, f1, n_params, epochs in (
        ("a", 0.9, 1000, 3),
        ("b", 0.95, 4000, 3),
        ("c", 0.85, 2000, 3),
        ("d", 0.99, 10, 1),
    ):
        params = {"temperature": 2.5, "w_skd": 0.5, "w_kd": 0.1, "lr": 0.01 * (1 + len(trial_id))}
        for epoch in range(1, epochs + 1):
            tables.add_epoch(
                trial_id, params, {"epoch": epoch, "val_f1": f1 - 0.1 * (epochs - epoch), "params": n_params}
            )
        tables.set_trial(trial_id, status="TERMINATED", max_epochs=3)
    tables.add_epoch("e", params, {"epoch": 1, "val_f1": 0.99, "params": 5})
    tables.flush(force=True)
    tables.close()
    trials = exp.trials("student")
    cost = {"a": 1000, "b": 4000, "c": 2000, "d": 10, "e": 5}
    trials["params"] = trials["trial_id"].map(cost)  # one column per cost, as the trainables report them
    write_table_atomic(trials, exp.path("results/trials.parquet"))
    st = experiment_status(exp.root)
    assert "Pareto front (val_f1 max, params min): not yet" in format_status(st)
    exp.write_result("pareto", pareto_front(exp.trials("student"), spec.search.objectives))
    text = format_status(experiment_status(exp.root))
    lines = text.splitlines()
    start = lines.index("Pareto front (val_f1 max, params min): 2 trials, from results/pareto.parquet")
    assert lines[start + 1 : start + 3] == [
        "  a: val_f1 0.9000, params 1000; temperature=2.5, w_skd=0.5, w_kd=0.1, lr=0.02",
        "  b: val_f1 0.9500, params 4000; temperature=2.5, w_skd=0.5, w_kd=0.1, lr=0.02",
    ]
    assert not lines[start + 3].startswith("  ")


def test_status_loads_neither_torch_nor_ray(exp):
    """`skd-tune status` reads files only: the CLI path imports no torch, Ray, scipy, scikit-learn or Optuna
    (on a finished digits experiment it answers in under a second)."""
    import subprocess
    import sys

    exp.mark_done("teacher", checkpoint="teacher/x", metrics={"val_f1": 0.99})
    code = (
        "import sys\n"
        "from skd_tune.cli import main\n"
        f"rc = main(['status', {str(exp.root)!r}])\n"
        "heavy = sorted(m for m in ('torch', 'ray', 'scipy', 'sklearn', 'optuna') if m in sys.modules)\n"
        "print('HEAVY', rc, heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "HEAVY 0 []" in out.stdout, out.stdout
