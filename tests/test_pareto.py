"""The Pareto front (`skd_tune.pareto`) against a brute-force reference on many seeded random trials
tables (ties, NaNs, early-stopped and unfinished trials, max and min modes), and its small cases."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from skd_tune.pareto import (
    describe_front,
    dominated,
    eligible,
    format_objective,
    missing_columns,
    non_dominated,
    objective_column,
    pareto_front,
)

MAX_EPOCHS = 5
STATUSES = ("TERMINATED", "TERMINATED", "TERMINATED", "ERROR", "RUNNING")
COSTS = ("params", "macs", "latency_ms_b1")


def _random_trials(rng: np.random.Generator, n: int, objectives: list[tuple[str, str]]) -> pd.DataFrame:
    """A trials table as results.py writes it: values on a coarse grid (many ties), some NaN, some trials
    stopped early (fewer epochs), running or errored, one with an unknown max_epochs now and then."""
    rows = []
    for i in range(n):
        status = STATUSES[int(rng.integers(len(STATUSES)))]
        epochs = MAX_EPOCHS if rng.random() < 0.7 else int(rng.integers(1, MAX_EPOCHS))
        row = {"trial_id": f"t{i:03d}", "status": status, "epochs": epochs, "max_epochs": MAX_EPOCHS}
        if rng.random() < 0.03:
            row["max_epochs"] = None
        for metric, _ in objectives:
            value = float(rng.integers(0, 6))
            row[objective_column(metric)] = math.nan if rng.random() < 0.08 else value
            if metric.startswith("val_"):  # the last epoch's value: never what the front uses
                row[f"last_{metric}"] = float(rng.integers(0, 6))
        row["temperature"] = float(rng.uniform(1, 10))
        rows.append(row)
    df = pd.DataFrame(rows)
    if n:
        df["max_epochs"] = df["max_epochs"].astype("Int64")
    return df


def _dominates(a: list[float], b: list[float], modes: list[str]) -> bool:
    """Reference: a no worse than b in every objective and strictly better in one (plain Python)."""
    no_worse = all((x >= y) if m == "max" else (x <= y) for x, y, m in zip(a, b, modes))
    better = any((x > y) if m == "max" else (x < y) for x, y, m in zip(a, b, modes))
    return no_worse and better


def _reference(df: pd.DataFrame, objectives: list[tuple[str, str]]) -> tuple[set[str], dict[str, list[float]]]:
    """(ids of the front, values of every eligible trial) by the definition, one trial at a time."""
    cols = [objective_column(m) for m, _ in objectives]
    modes = [mode for _, mode in objectives]
    pool = {}
    for rec in df.to_dict("records"):
        budget = rec["max_epochs"]
        if rec["status"] != "TERMINATED" or budget is None or pd.isna(budget) or rec["epochs"] < budget:
            continue
        values = [float(rec[c]) for c in cols]
        if all(math.isfinite(v) for v in values):
            pool[rec["trial_id"]] = values
    front = {t for t, v in pool.items() if not any(_dominates(w, v, modes) for u, w in pool.items() if u != t)}
    return front, pool


def _random_objectives(rng: np.random.Generator) -> list[tuple[str, str]]:
    first = [("val_f1", "max"), ("val_loss", "min"), ("val_auc", "max")][int(rng.integers(3))]
    k = int(rng.integers(1, 3))
    costs = [str(c) for c in rng.choice(COSTS, size=k, replace=False)]
    return [first] + [(c, "min" if rng.random() < 0.8 else "max") for c in costs]


@pytest.mark.parametrize("seed", range(8))
def test_front_is_the_non_dominated_finished_trials_on_random_tables(seed):
    rng = np.random.default_rng(seed)
    for _ in range(60):  # 480 tables in all
        objectives = _random_objectives(rng)
        df = _random_trials(rng, int(rng.integers(0, 40)), objectives)
        front = pareto_front(df, objectives)
        expected, pool = _reference(df, objectives)
        ids = list(front["trial_id"]) if len(front) else []
        assert set(ids) == expected and len(ids) == len(set(ids))
        modes = [mode for _, mode in objectives]
        for t in ids:  # non-dominated: no eligible trial beats a front trial
            assert not any(_dominates(w, pool[t], modes) for u, w in pool.items() if u != t)
        for t in set(pool) - expected:  # complete: every eligible trial off the front is beaten by one on it
            assert any(_dominates(pool[f], pool[t], modes) for f in expected)
        off = dominated(df, objectives)
        assert set(off["trial_id"] if len(off) else []) == set(pool) - expected
        assert len(eligible(df, objectives)) == len(pool)
        if len(front):  # sorted by the objectives after the first, then the first best first, then id
            keys = [
                tuple(front.iloc[i][objective_column(m)] for m, _ in objectives[1:])
                + ((-1 if objectives[0][1] == "max" else 1) * front.iloc[i][objective_column(objectives[0][0])],)
                + (front.iloc[i]["trial_id"],)
                for i in range(len(front))
            ]
            assert keys == sorted(keys)
            assert list(front.columns) == list(df.columns)  # every column of the trials kept


def test_non_dominated_in_blocks_matches_the_staircase():
    """3000 trials in two objectives (cost min, value max): the blockwise comparison against the front
    by cost level: the best value at a cost is on it when it beats everything cheaper, ties included."""
    rng = np.random.default_rng(0)
    values = np.column_stack([rng.integers(0, 400, 3000), rng.normal(size=3000).round(2)]).astype(float)
    mask = non_dominated(values, ["min", "max"])  # 3000 x 3000 x 2 cells: more than one block
    ref = np.zeros(len(values), dtype=bool)
    for x in np.unique(values[:, 0]):
        here = values[:, 0] == x
        top = values[here, 1].max()
        cheaper = values[values[:, 0] < x, 1]
        if not len(cheaper) or top > cheaper.max():
            ref |= here & (values[:, 1] == top)
    assert mask.sum() >= 1 and np.array_equal(mask, ref)


def _table(rows: list[dict]) -> pd.DataFrame:
    base = {"status": "TERMINATED", "epochs": MAX_EPOCHS, "max_epochs": MAX_EPOCHS}
    return pd.DataFrame([base | r for r in rows])


OBJ = [("val_f1", "max"), ("params", "min")]


def test_ties_are_all_kept_and_the_early_stopped_are_out():
    df = _table(
        [
            {"trial_id": "a", "best_val_f1": 0.9, "last_val_f1": 0.1, "params": 100},
            {"trial_id": "b", "best_val_f1": 0.9, "last_val_f1": 0.1, "params": 100},  # a's twin
            {"trial_id": "c", "best_val_f1": 0.95, "last_val_f1": 0.95, "params": 500},
            {"trial_id": "d", "best_val_f1": 0.8, "last_val_f1": 0.99, "params": 300},  # dominated by a (best_)
            {"trial_id": "e", "best_val_f1": 0.99, "params": 10, "epochs": 2},  # stopped early by ASHA
            {"trial_id": "f", "best_val_f1": 0.99, "params": math.nan},  # its cost never measured
            {"trial_id": "g", "best_val_f1": 0.99, "params": 10, "status": "ERROR"},
        ]
    )
    front = pareto_front(df, OBJ)
    assert list(front["trial_id"]) == ["a", "b", "c"]  # cheapest first; the twins by id
    assert list(dominated(df, OBJ)["trial_id"]) == ["d"]
    assert describe_front(front, OBJ) == "val_f1 0.9000 to 0.9500, params 100 to 500"


def test_min_and_max_modes_and_objects_with_metric_and_mode():
    df = _table(
        [
            {"trial_id": "a", "best_val_loss": 0.2, "latency_ms_b1": 1.5},
            {"trial_id": "b", "best_val_loss": 0.1, "latency_ms_b1": 3.0},
            {"trial_id": "c", "best_val_loss": 0.3, "latency_ms_b1": 2.0},
        ]
    )
    from skd_tune.spec import Objective

    objectives = [Objective(metric="val_loss", mode="min"), Objective(metric="latency_ms_b1", mode="min")]
    assert list(pareto_front(df, objectives)["trial_id"]) == ["a", "b"]
    flipped = [("val_loss", "max"), ("latency_ms_b1", "max")]  # the other way round: c then b
    assert list(pareto_front(df, flipped)["trial_id"]) == ["c", "b"]
    with pytest.raises(ValueError, match=r"objective val_loss: mode must be 'max' or 'min', got 'up'"):
        pareto_front(df, [("val_loss", "up"), ("params", "min")])


def test_a_missing_cost_column_leaves_the_front_empty_and_says_which():
    df = _table([{"trial_id": "a", "best_val_f1": 0.9}])
    assert missing_columns(df, OBJ) == ["params"]
    assert pareto_front(df, OBJ).empty and missing_columns(None, OBJ) == ["best_val_f1", "params"]
    assert pareto_front(None, OBJ).empty and pareto_front(df.iloc[0:0], OBJ).empty


def test_columns_and_formats():
    assert objective_column("val_f1") == "best_val_f1" and objective_column("params") == "params"
    assert format_objective("val_f1", 0.91234) == "0.9123" and format_objective("params", 12345.0) == "12345"
    assert format_objective("latency_ms_b1", 0.123456) == "0.1235" and format_objective("macs", None) == "-"


def test_the_student_stage_writes_the_front_and_shows_it(tmp_path):
    """StudentStage's end of a multi-objective search: results/pareto.parquet from the trials table, the
    counts in its record, its line; the stage is not intact without the file. The KD search has no front."""
    from skd_tune.experiment import Experiment, location_of, prepare, write_table_atomic
    from skd_tune.spec import validate_spec
    from skd_tune.stages import Context, MethodSearchStage, StudentStage

    from .conftest import TINY_SPEC, deep_update

    objectives = [{"metric": "val_f1", "mode": "max"}, {"metric": "params", "mode": "min"}]
    changes = {"storage": str(tmp_path / "runs"), "search": {"objectives": objectives}}
    spec = validate_spec(deep_update(TINY_SPEC, changes))
    exp = Experiment.open(location_of(spec))
    prepare(exp, spec)
    lines: list[str] = []
    ctx = Context(spec, exp, None, lines.append, "skd-tune run x", lambda: None, True)
    stage = StudentStage()
    assert not stage.intact(ctx, {}) and MethodSearchStage("search_kd", "KD").intact(ctx, {})
    trials = _table(
        [
            {"trial_id": "a", "best_val_f1": 0.9, "params": 100},
            {"trial_id": "b", "best_val_f1": 0.95, "params": 500},
            {"trial_id": "c", "best_val_f1": 0.8, "params": 300},
            {"trial_id": "d", "best_val_f1": 0.99, "params": 10, "epochs": 2},
        ]
    )
    write_table_atomic(trials, exp.path("results/trials.parquet"))
    record = stage._write_front(ctx, spec.search.objectives)
    assert record == {"pareto_front": 2, "pareto_finished": 3, "pareto_missing": []}
    assert list(exp.result("pareto")["trial_id"]) == ["a", "b"] and stage.intact(ctx, record)
    stage.show(ctx, record)
    assert lines == [
        "[student] Pareto front: 2 trials (of 3 that finished all their epochs with every objective; val_f1 0.9000 "
        "to 0.9500, params 100 to 500) in results/pareto.parquet"
    ]
    exp.path("results/pareto.parquet").write_bytes(b"PAR1 cut short")
    assert not stage.intact(ctx, record)  # damaged: the stage runs again and rewrites it
    write_table_atomic(trials.drop(columns="params"), exp.path("results/trials.parquet"))
    stage.show(ctx, stage._write_front(ctx, spec.search.objectives))
    assert lines[-1] == (
        "[student] Pareto front: 0 trials (of 0 that finished all their epochs with every objective; the trials "
        "table has no params column: no trial reported it) in results/pareto.parquet"
    )
