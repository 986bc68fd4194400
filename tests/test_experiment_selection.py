"""Choosing a student trial (experiment/selection.py): which trials count as finished, `--trial`, and
`--pick` honouring the budget and taking the best within it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from skd_tune.errors import UserError
from skd_tune.experiment import best_trial
from skd_tune.experiment.selection import finished, parse_budget, pick_trial, select_trial


def _trials(rng: np.random.Generator, n: int = 40) -> pd.DataFrame:
    status = rng.choice(["TERMINATED", "TERMINATED", "TERMINATED", "ERROR", "RUNNING"], n)
    max_epochs = np.full(n, 5)
    epochs = np.where(rng.random(n) < 0.7, 5, rng.integers(1, 5, n))  # ASHA stopped some early
    return pd.DataFrame(
        {
            "trial_id": [f"t{i:02d}" for i in range(n)],
            "status": status,
            "epochs": epochs,
            "max_epochs": max_epochs,
            "checkpoint_path": [None if rng.random() < 0.05 else f"student/t{i}/checkpoint_000000" for i in range(n)],
            "best_val_f1": rng.random(n),
            "params": rng.integers(500, 50_000, n),
        }
    )


def test_finished_means_every_epoch_reported_and_a_checkpoint():
    t = _trials(np.random.default_rng(0))
    done = finished(t)
    expected = (t["status"] == "TERMINATED") & (t["epochs"] == t["max_epochs"]) & t["checkpoint_path"].notna()
    assert list(done["trial_id"]) == list(t.loc[expected, "trial_id"]) and 0 < len(done) < len(t)
    assert finished(None).empty and finished(pd.DataFrame()).empty


@pytest.mark.parametrize("seed", range(25))
@pytest.mark.parametrize("op", ["<=", "<", ">=", ">"])
def test_pick_honours_the_budget_and_takes_the_best_within_it(seed, op):
    rng = np.random.default_rng(seed)
    t = _trials(rng)
    value = float(rng.integers(5_000, 45_000))
    try:
        got = pick_trial(t, f"params {op} {value:g}", "val_f1", "max")
    except UserError:
        got = None
    ok = finished(t)
    compare = {
        "<=": lambda v: v <= value,
        "<": lambda v: v < value,
        ">=": lambda v: v >= value,
        ">": lambda v: v > value,
    }
    within = ok[ok["params"].map(compare[op])]
    if within.empty:
        assert got is None
        return
    assert got["trial_id"] == best_trial(within, "val_f1", "max")["trial_id"]
    assert got["best_val_f1"] == within["best_val_f1"].max()


def test_pick_with_mode_min_and_its_errors():
    t = _trials(np.random.default_rng(1))
    got = pick_trial(t, "params<=30000", "val_f1", "min")
    ok = finished(t)
    assert got["best_val_f1"] == ok[ok["params"] <= 30000]["best_val_f1"].min()
    with pytest.raises(UserError, match=r"none of the \d+ finished trials is within that budget \(their params ranges"):
        pick_trial(t, "params<10", "val_f1", "max")
    with pytest.raises(UserError, match=r"not a budget; write COLUMN<=VALUE"):
        pick_trial(t, "params about 10", "val_f1", "max")
    with pytest.raises(UserError, match=r"the student trials have no column 'latency'; budget columns: .*params"):
        pick_trial(t, "latency<=3", "val_f1", "max")


def test_parse_budget():
    assert parse_budget("params<=20000", ["params"]) == ("params", "<=", 20000.0)
    assert parse_budget(" latency_ms_b1 < 1.5e0 ", ["latency_ms_b1"]) == ("latency_ms_b1", "<", 1.5)


def test_select_trial_by_id():
    t = _trials(np.random.default_rng(2))
    ok = finished(t)
    assert select_trial(t, ok["trial_id"].iloc[0])["trial_id"] == ok["trial_id"].iloc[0]
    stopped = t[~t["trial_id"].isin(ok["trial_id"])]["trial_id"].iloc[0]
    with pytest.raises(UserError, match=rf"--trial {stopped}: that trial did not finish all its epochs"):
        select_trial(t, stopped)
    with pytest.raises(UserError, match=r"--trial nope: that trial is not a student trial; finished trials: t"):
        select_trial(t, "nope")
