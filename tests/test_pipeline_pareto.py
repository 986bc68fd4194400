"""End to end: a two-objective search (val_f1 against the student's parameter count) over models and
widths on digits, its Pareto front in Parquet, status and the report, and `skd-tune export --pick`."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from skd_tune.pareto import pareto_front
from skd_tune.serve import load_student

from .conftest import run_cli

pytestmark = pytest.mark.slow

PARETO = {
    "student": {"model": "mlp", "epochs": 3},
    "search": {
        "objectives": [{"metric": "val_f1", "mode": "max"}, {"metric": "params", "mode": "min"}],
        "num_samples": 6,
        "sampler": "nsga2",
        "scheduler": {"name": "fifo"},
        "space": {
            "model": {"choice": ["mlp_tiny", "mlp", "cnn_tiny"]},
            "width": {"loguniform": [0.25, 2.0]},
            "lr": {"loguniform": [3e-3, 3e-2]},
        },
    },
    "methods": {"seeds": 1, "point": "params<=20000"},
}


@pytest.fixture(scope="module")
def pareto_run(tmp_path_factory):

    from .conftest import TINY_SPEC, deep_update, run_spec

    cwd = tmp_path_factory.mktemp("pareto")
    exp, proc = run_spec(cwd, deep_update(TINY_SPEC, {"name": "pareto", **PARETO}))
    return cwd, exp, proc


def test_every_trial_measures_its_cost_and_the_front_is_written(pareto_run):
    _, exp, proc = pareto_run
    trials = pd.read_parquet(exp / "results" / "trials.parquet")
    assert len(trials) == 6 and (trials["status"] == "TERMINATED").all()
    assert (trials["latency_ms_b1"] > 0).all() and (trials["latency_ms_b64"] > 0).all() and (trials["macs"] > 0).all()
    for row in trials.to_dict("records"):  # the parameter count is that of the model the export builds
        model, meta = load_student_of(exp, row)
        assert row["params"] == sum(p.numel() for p in model.parameters())
        assert meta["model"] == row["model"] and math.isclose(meta["width"], row["width"])
    front = pd.read_parquet(exp / "results" / "pareto.parquet")
    expected = pareto_front(trials, [("val_f1", "max"), ("params", "min")])
    assert sorted(front["trial_id"]) == sorted(expected["trial_id"]) and len(front) >= 1
    assert "[student] 2 objectives (val_f1 max, params min)" in proc.stdout
    assert "[student] Pareto front: " in proc.stdout


def load_student_of(exp, row):
    """The trial's student as the export would build it: its checkpoint's best weights, its model and width."""
    from skd_tune.data import load_dataset
    from skd_tune.experiment import Experiment, frozen_spec
    from skd_tune.serve.chosen import export_trial

    e = Experiment.existing(exp)
    spec = frozen_spec(e)
    data = load_dataset(spec.data, spec.seed)
    out = exp.parent / f"export-{row['trial_id']}"
    export_trial(e, spec, data, row, out)
    return load_student(out)


def test_status_and_report_show_the_front(pareto_run):
    cwd, exp, _ = pareto_run
    status = run_cli("status", str(exp), cwd=cwd)
    assert status.returncode == 0, status.stderr
    front = pd.read_parquet(exp / "results" / "pareto.parquet")
    assert f"Pareto front (val_f1 max, params min): {len(front)} trial" in status.stdout
    for trial_id in front["trial_id"]:
        assert f"  {trial_id}: val_f1 " in status.stdout
    report = run_cli("report", str(exp), cwd=cwd)
    assert report.returncode == 0, report.stderr
    summary = (exp / "report" / "summary.md").read_text()
    assert "## Pareto front: val_f1 max, params min" in summary and (exp / "report" / "pareto_params.png").exists()


def test_export_pick_takes_the_best_within_the_budget(pareto_run, tmp_path):
    cwd, exp, _ = pareto_run
    trials = pd.read_parquet(exp / "results" / "trials.parquet")
    budget = float(trials["params"].median())
    within = trials[trials["params"] <= budget]
    best = within.sort_values("trial_id").loc[within["best_val_f1"].idxmax()]
    out = tmp_path / "picked"
    proc = run_cli(
        "export", str(exp), "--pick", f"params<={budget:g}", "--out", str(out), "--formats", "state_dict", cwd=cwd
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    meta = json.loads((out / "meta.json").read_text())
    assert meta["metrics"]["val"]["trial_id"] == best["trial_id"]
    assert proc.stdout.startswith(f"trial {best['trial_id']} (")
    assert "test f1 " in proc.stdout
    too_small = run_cli("export", str(exp), "--pick", "params<1", "--out", str(tmp_path / "none"), cwd=cwd)
    assert too_small.returncode == 2 and "none of the 6 finished trials is within that budget" in too_small.stderr
    assert "Traceback" not in too_small.stderr


def test_the_method_table_compares_the_chosen_point_at_its_architecture(pareto_run):
    from skd_tune.experiment.selection import pick_trial

    _, exp, proc = pareto_run
    trials = pd.read_parquet(exp / "results" / "trials.parquet")
    point = pick_trial(trials, "params<=20000", "val_f1", "max")
    state = json.loads((exp / "state.json").read_text())
    for stage in ("search_kd", "search_nokd"):  # KD and no-KD searched at the point's model and width
        fixed = state["stages"][stage]["fixed"]
        assert fixed["model"] == point["model"] and math.isclose(fixed["width"], point["width"])
        searched = pd.read_parquet(exp / "results" / f"{stage.replace('search_', '')}_trials.parquet")
        assert (searched["params"] == point["params"]).all()
    assert f"[methods] compared at SKD trial {point['trial_id']} (the best within params<=20000)" in proc.stdout


def test_duckdb_reads_the_tables_as_written(pareto_run):
    """The README's query: the best val F1 and the smallest student per model, straight from the Parquet
    files (joined with the per-epoch table) while or after the search runs."""
    import duckdb

    _, exp, _ = pareto_run
    trials, epochs = exp / "results" / "trials.parquet", exp / "results" / "epochs.parquet"
    rows = duckdb.sql(
        f"""
        select t.model, count(distinct t.trial_id) as trials, max(t.best_val_f1) as best_f1,
               min(t.params) as smallest, sum(e.epoch_time_s) as train_s
        from '{trials}' t join '{epochs}' e using (trial_id)
        group by t.model order by best_f1 desc
        """
    ).fetchall()
    t, e = pd.read_parquet(trials), pd.read_parquet(epochs)
    expected = t.groupby("model").agg(
        trials=("trial_id", "nunique"), best_f1=("best_val_f1", "max"), smallest=("params", "min")
    )
    assert {r[0] for r in rows} == set(expected.index) and [r[2] for r in rows] == sorted(
        expected["best_f1"], reverse=True
    )
    for model, n, best, smallest, train_s in rows:
        assert (n, best, smallest) == tuple(expected.loc[model])
        assert train_s == pytest.approx(e[e["trial_id"].isin(t[t["model"] == model]["trial_id"])]["epoch_time_s"].sum())
