"""The method table's maths: which configuration each method trains, and mean ± std over seeds."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from skd_tune.methods import METHODS, TEST_METRICS, format_method_table, method_gains, method_params, method_table


def test_method_params_change_only_what_is_distilled():
    best = {"temperature": 4.2, "lr": 3e-3, "w_kd": 0.3, "w_skd": 0.5, "curriculum.pacing": "root"}
    p = method_params(best, w_kd=0.3, w_skd=0.5)
    assert set(p) == set(METHODS)
    for method in METHODS:
        assert {k: v for k, v in p[method].items() if k not in ("w_kd", "w_skd")} == {
            "temperature": 4.2,
            "lr": 3e-3,
            "curriculum.pacing": "root",
        }
    assert (p["SKD"]["w_kd"], p["SKD"]["w_skd"]) == (0.3, 0.5)
    assert p["KD"]["w_kd"] == pytest.approx(0.8) and p["KD"]["w_skd"] == 0.0  # same distillation strength
    assert (p["no-KD"]["w_kd"], p["no-KD"]["w_skd"]) == (0.0, 0.0)
    assert best["w_kd"] == 0.3  # the input is not modified


def test_method_params_use_the_given_weights_when_not_searched():
    p = method_params({"temperature": 2.0}, w_kd=0.0, w_skd=1.0)
    assert p["SKD"] == {"temperature": 2.0, "w_kd": 0.0, "w_skd": 1.0}
    assert p["KD"] == {"temperature": 2.0, "w_kd": 1.0, "w_skd": 0.0}


def _runs(rng, seeds=3, errored=()):
    rows = []
    for method in METHODS:
        for seed in range(seeds):
            row = {"method": method, "seed": seed, "status": "ERROR" if (method, seed) in errored else "TERMINATED"}
            row |= {f"test_{m}": float(rng.uniform(0.6, 1.0)) for m in TEST_METRICS}
            rows.append(row)
    return pd.DataFrame(rows)


def test_method_table_mean_and_sample_std_of_finished_runs():
    rng = np.random.default_rng(0)
    runs = _runs(rng, errored={("KD", 2)})
    table = method_table(runs, teacher={"f1": 0.99, "accuracy": 0.98, "auc": 1.0, "precision": 0.97, "recall": 0.96})
    assert list(table["method"]) == [*METHODS, "teacher"]
    t = table.set_index("method")
    for method in METHODS:
        done = runs[(runs["method"] == method) & (runs["status"] == "TERMINATED")]
        assert t.loc[method, "n"] == len(done)
        for m in TEST_METRICS:
            assert t.loc[method, f"{m}_mean"] == pytest.approx(np.mean(done[f"test_{m}"]))
            assert t.loc[method, f"{m}_std"] == pytest.approx(np.std(done[f"test_{m}"], ddof=1))
    assert t.loc["KD", "n"] == 2
    assert t.loc["teacher", "f1_mean"] == 0.99 and math.isnan(t.loc["teacher", "f1_std"])
    gains = method_gains(table)
    assert gains["SKD - KD"] == pytest.approx(t.loc["SKD", "f1_mean"] - t.loc["KD", "f1_mean"])
    assert gains["SKD - no-KD"] == pytest.approx(t.loc["SKD", "f1_mean"] - t.loc["no-KD", "f1_mean"])


def test_one_seed_has_no_std_and_missing_method_is_nan():
    runs = _runs(np.random.default_rng(1), seeds=1)
    runs = runs[runs["method"] != "KD"]
    t = method_table(runs).set_index("method")
    assert t.loc["SKD", "n"] == 1 and math.isnan(t.loc["SKD", "f1_std"])
    assert t.loc["KD", "n"] == 0 and math.isnan(t.loc["KD", "f1_mean"])
    assert "teacher" not in t.index
    assert math.isnan(method_gains(t.reset_index())["SKD - KD"])


def test_format_method_table_shows_mean_std_and_gains():
    rng = np.random.default_rng(2)
    table = method_table(_runs(rng), teacher={m: 0.9 for m in TEST_METRICS})
    text = format_method_table(table)
    lines = text.splitlines()
    assert lines[0].split() == ["method", "seeds", "f1", "accuracy", "AUC", "precision", "recall"]
    skd = table.set_index("method").loc["SKD"]
    assert f"{skd['f1_mean']:.4f} ± {skd['f1_std']:.4f}" in text
    assert lines[4].split()[:3] == ["teacher", "1", "0.9000"]
    gain = (skd["f1_mean"] - table.set_index("method").loc["KD", "f1_mean"]) * 100
    assert f"SKD - KD {gain:+.2f} points" in lines[-1]
