"""The method table's maths: which configuration each method trains, and mean ± std over seeds."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from skd_tune.methods import (
    METHODS,
    PAIRS,
    TEST_METRICS,
    floor_warnings,
    format_method_table,
    method_comparisons,
    method_gains,
    method_params,
    method_table,
)


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
    assert lines[0].split() == ["method", "seeds", "f1", "accuracy", "AUC", "precision", "recall", "f1", "95%", "CI"]
    skd = table.set_index("method").loc["SKD"]
    assert f"{skd['f1_mean']:.4f} ± {skd['f1_std']:.4f}" in text
    assert lines[4].split()[:3] == ["teacher", "1", "0.9000"]
    gain = (skd["f1_mean"] - table.set_index("method").loc["KD", "f1_mean"]) * 100
    assert f"SKD - KD {gain:+.2f} points" in lines[-1]


def test_intervals_and_paired_comparisons_from_the_runs():
    rng = np.random.default_rng(3)
    runs = _runs(rng, seeds=4, errored={("KD", 3)})
    table = method_table(runs).set_index("method")
    skd = runs[(runs["method"] == "SKD")]["test_f1"].to_numpy()
    low, high = stats.t.interval(0.95, 3, loc=skd.mean(), scale=stats.sem(skd))
    assert (table.loc["SKD", "f1_ci_low"], table.loc["SKD", "f1_ci_high"]) == (pytest.approx(low), pytest.approx(high))
    pairs = method_comparisons(runs).set_index(["a", "b"])
    assert list(pairs.index) == list(PAIRS)
    by_seed = runs.pivot_table(index="seed", columns="method", values="test_f1")
    kd_pair = pairs.loc[("SKD", "KD")]
    assert kd_pair["n"] == 3  # KD's seed 3 errored: that pair is left out
    a, b = by_seed["SKD"].to_numpy()[:3], by_seed["KD"].to_numpy()[:3]
    assert kd_pair["mean"] == pytest.approx((a - b).mean()) and kd_pair["p_t"] == pytest.approx(
        stats.ttest_rel(a, b).pvalue
    )
    assert pairs.loc[("SKD", "no-KD"), "n"] == 4
    text = format_method_table(method_table(runs), method_comparisons(runs))
    assert text.splitlines()[-3].startswith("SKD − KD: ") and "F1 gains" not in text
    assert text.splitlines()[-1].startswith("KD − no-KD: ") and "3 seeds" in text.splitlines()[-1]


def test_constant_floor_row_and_warnings():
    from skd_tune.metrics import constant_metrics

    y_test = np.array([0] * 6 + [1] * 4)
    name, floor = constant_metrics(y_test, np.array([0, 0, 0, 1]), num_classes=2, positive_class=1)
    assert name == "always positive" and floor["f1"] == pytest.approx(2 * 0.4 / 1.4) and floor["auc"] == 0.5
    runs = _runs(np.random.default_rng(4), seeds=3)
    runs.loc[runs["method"] == "no-KD", "test_f1"] = [0.50, 0.60, 0.55]  # around the floor: not beyond its CI
    runs.loc[runs["method"].isin(["KD", "SKD"]), "test_f1"] = 0.95
    table = method_table(runs, teacher={"f1": 0.56}, constant=floor)
    assert list(table["method"]) == [*METHODS, "teacher", "constant"]
    warnings = floor_warnings(table)  # the teacher (0.56) beats no-KD (0.55): no line for it
    assert len(warnings) == 1
    assert warnings[0].startswith("warning: no-KD's test F1 0.5500 does not beat predicting one class")
    assert floor_warnings(method_table(runs, teacher={"f1": 0.50}, constant=floor))[-1].startswith(
        "warning: the teacher's test F1 0.5000 does not beat the no-KD student's (0.5500)"
    )
    assert floor_warnings(method_table(runs)) == []  # no floor, no teacher: nothing to compare with


def test_method_spaces_give_each_method_what_it_has():
    from skd_tune.methods import method_spaces
    from skd_tune.spec import Distribution

    t, w, lr = Distribution(loguniform=(1, 10)), Distribution(uniform=(0, 1)), Distribution(loguniform=(1e-3, 1e-1))
    full = method_spaces({"temperature": t, "w_skd": w, "w_kd": w, "lr": lr}, w_kd=0.0, w_skd=1.0)
    assert full["SKD"] == ({"temperature": t, "w_skd": w, "w_kd": w, "lr": lr}, {})
    assert full["KD"] == ({"temperature": t, "w_kd": w, "lr": lr}, {"w_skd": 0.0})
    assert full["no-KD"] == ({"lr": lr}, {"w_kd": 0.0, "w_skd": 0.0})
    # Fallbacks: w_skd searched but not w_kd: KD searches w_kd over w_skd's range ...
    skd_only = method_spaces({"temperature": t, "w_skd": w}, w_kd=0.0, w_skd=1.0)
    assert skd_only["KD"] == ({"temperature": t, "w_kd": w}, {"w_skd": 0.0})
    # ... neither searched: KD distils with SKD's strength on class logits; no-KD has nothing to search
    neither = method_spaces({"temperature": t}, w_kd=0.25, w_skd=0.5)
    assert neither["KD"] == ({"temperature": t}, {"w_skd": 0.0, "w_kd": 0.75})
    assert neither["no-KD"] == ({}, {"w_kd": 0.0, "w_skd": 0.0})


def test_method_spaces_hold_the_compared_points_architecture_for_kd_and_no_kd():
    from skd_tune.methods import method_spaces
    from skd_tune.spec import Distribution

    model, width = Distribution(choice=["mlp", "cnn_tiny"]), Distribution(uniform=(0.25, 2.0))
    t, lr = Distribution(loguniform=(1, 10)), Distribution(loguniform=(1e-3, 1e-1))
    space = {"model": model, "width": width, "temperature": t, "lr": lr}
    point = {"model": "cnn_tiny", "width": 0.5}
    spaces = method_spaces(space, w_kd=0.0, w_skd=1.0, fixed=point)
    assert spaces["SKD"] == (space, {})  # SKD's configuration is the point itself
    assert spaces["KD"] == ({"temperature": t, "lr": lr}, {"w_skd": 0.0, "w_kd": 1.0, **point})
    assert spaces["no-KD"] == ({"lr": lr}, {"w_kd": 0.0, "w_skd": 0.0, **point})
