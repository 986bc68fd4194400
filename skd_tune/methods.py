"""The method table of the SKD papers: no-KD, KD and SKD compared on the held-out test split.

Pure pandas, no Ray and no torch: pipeline.py runs the retraining (a Ray Tune stage) and writes
`results/methods.parquet`, one row per method and seed; this module says which configuration each
method trains and turns those rows into the table (mean and sample standard deviation over seeds).

Which configuration each method gets, from the best student of the search (its parameters ``p``):

    SKD    p as found (weights w_ce, w_kd, w_skd of the search)
    KD     p with w_kd := w_kd + w_skd and w_skd := 0   (same distillation strength, class logits only;
                                                         Hinton et al. 2015)
    no-KD  p with w_kd := 0 and w_skd := 0              (cross-entropy on the labels only)

so the three rows differ only in what is distilled, as in Sajedi et al. (2022), Table 2.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["METHODS", "TEST_METRICS", "format_method_table", "method_gains", "method_params", "method_table"]

METHODS = ("no-KD", "KD", "SKD")
TEST_METRICS = ("f1", "accuracy", "auc", "precision", "recall")


def method_params(best: dict[str, Any], w_kd: float, w_skd: float) -> dict[str, dict[str, Any]]:
    """Parameters of each method's student, from the best trial's searched parameters `best`.

    `w_kd` and `w_skd` are the weights that trial trained with (searched, or the spec's defaults).
    """
    base = dict(best)
    return {
        "no-KD": {**base, "w_kd": 0.0, "w_skd": 0.0},
        "KD": {**base, "w_kd": float(w_kd) + float(w_skd), "w_skd": 0.0},
        "SKD": {**base, "w_kd": float(w_kd), "w_skd": float(w_skd)},
    }


def method_table(runs: pd.DataFrame, teacher: dict[str, float] | None = None) -> pd.DataFrame:
    """Mean and standard deviation of each test metric per method (rows in METHODS order, then the teacher).

    `runs` is methods.parquet: columns `method`, `seed`, `status` and `test_<metric>`; only finished
    (TERMINATED) runs count. Columns of the result: `method`, `n` (seeds that finished), and for each
    metric in TEST_METRICS `<metric>_mean` and `<metric>_std` (sample std, ddof=1; NaN for n < 2).
    `teacher` (its test metrics, one run) adds a row named "teacher".
    """
    rows = []
    done = runs[runs["status"] == "TERMINATED"] if "status" in runs else runs
    for method in METHODS:
        mine = done[done["method"] == method] if len(done) else done
        row: dict[str, Any] = {"method": method, "n": int(len(mine))}
        for m in TEST_METRICS:
            col = f"test_{m}"
            values = mine[col].astype(float).to_numpy() if col in mine and len(mine) else np.array([])
            row[f"{m}_mean"] = float(np.mean(values)) if len(values) else math.nan
            row[f"{m}_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else math.nan
        rows.append(row)
    if teacher:
        row = {"method": "teacher", "n": 1}
        for m in TEST_METRICS:
            row[f"{m}_mean"] = float(teacher.get(m, math.nan))
            row[f"{m}_std"] = math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def method_gains(table: pd.DataFrame, metric: str = "f1") -> dict[str, float]:
    """Differences of the mean test `metric` between methods: SKD - KD and SKD - no-KD (NaN if missing)."""
    means = dict(zip(table["method"], table[f"{metric}_mean"]))
    skd = means.get("SKD", math.nan)
    return {"SKD - KD": skd - means.get("KD", math.nan), "SKD - no-KD": skd - means.get("no-KD", math.nan)}


def format_method_table(table: pd.DataFrame) -> str:
    """The table as aligned text, `mean ± std` per metric, with the F1 gains underneath."""
    header = ["method", "seeds"] + [m if m != "auc" else "AUC" for m in TEST_METRICS]
    lines = [header]
    for rec in table.to_dict("records"):
        cells = [str(rec["method"]), str(rec["n"])]
        for m in TEST_METRICS:
            mean, std = rec[f"{m}_mean"], rec[f"{m}_std"]
            cells.append("-" if math.isnan(mean) else (f"{mean:.4f}" if math.isnan(std) else f"{mean:.4f} ± {std:.4f}"))
        lines.append(cells)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines]
    gains = method_gains(table)
    text.append(
        "F1 gains: "
        + ", ".join(f"{k} {v * 100:+.2f} points" if not math.isnan(v) else f"{k} -" for k, v in gains.items())
    )
    return "\n".join(text)
