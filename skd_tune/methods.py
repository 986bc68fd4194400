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

Every method is retrained with the same seeds (paired runs): `method_table` gives each method's mean,
std and 95% t-interval, `method_comparisons` each pair's paired difference with its interval, the
paired t-test and (6 or more seeds) the Wilcoxon signed-rank test, and a verdict (statistics.py says
what each assumes).
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from .statistics import mean_interval, paired_difference

__all__ = [
    "METHODS",
    "PAIRS",
    "TEST_METRICS",
    "format_method_table",
    "floor_warnings",
    "method_comparisons",
    "method_gains",
    "method_params",
    "method_spaces",
    "method_table",
]

METHODS = ("no-KD", "KD", "SKD")
TEST_METRICS = ("f1", "accuracy", "auc", "precision", "recall")
PAIRS = (("SKD", "KD"), ("SKD", "no-KD"), ("KD", "no-KD"))  # (a, b): a − b


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


def method_spaces(
    space: dict[str, Any], w_kd: float, w_skd: float, fixed: dict[str, Any] | None = None
) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """For a search per method (`methods.search: per_method`): each method's search space and the
    parameters it fixes, from the spec's `space` (name -> distribution) and the student's own weights.

        SKD    the spec's space as written; nothing fixed
        KD     the space without w_skd; w_skd = 0. When the space has w_skd but not w_kd, KD searches
               w_kd over w_skd's distribution (the same distillation strength to explore); when it has
               neither, w_kd = w_kd + w_skd of the spec (the same strength as SKD's, on class logits)
        no-KD  the space without temperature, w_kd and w_skd; w_kd = w_skd = 0. When nothing is left to
               search, no-KD trains once with the spec's values (its "search" has one trial)

    `fixed` (e.g. {"model": "cnn_tiny", "width": 0.5}, the architecture of the SKD trial the table compares
    in a cost trade-off) is taken out of KD's and no-KD's spaces and held at those values.
    """
    kd = {k: v for k, v in space.items() if k != "w_skd"}
    kd_fixed: dict[str, float] = {"w_skd": 0.0}
    if "w_kd" not in kd and "w_skd" in space:
        kd["w_kd"] = space["w_skd"]
    elif "w_kd" not in kd:
        kd_fixed["w_kd"] = float(w_kd) + float(w_skd)
    no_kd = {k: v for k, v in space.items() if k not in ("temperature", "w_kd", "w_skd")}
    held = dict(fixed or {})
    kd = {k: v for k, v in kd.items() if k not in held}
    no_kd = {k: v for k, v in no_kd.items() if k not in held}
    return {
        "no-KD": (no_kd, {"w_kd": 0.0, "w_skd": 0.0, **held}),
        "KD": (kd, {**kd_fixed, **held}),
        "SKD": (dict(space), {}),
    }


def method_table(
    runs: pd.DataFrame, teacher: dict[str, float] | None = None, constant: dict[str, float] | None = None
) -> pd.DataFrame:
    """Mean and standard deviation of each test metric per method (rows in METHODS order, then the teacher).

    `runs` is methods.parquet: columns `method`, `seed`, `status` and `test_<metric>`; only finished
    (TERMINATED) runs count. Columns of the result: `method`, `n` (seeds that finished), and for each
    metric in TEST_METRICS `<metric>_mean`, `<metric>_std` (sample std, ddof=1) and the 95% t-interval
    of the mean `<metric>_ci_low`, `<metric>_ci_high` (NaN for n < 2). `teacher` (its test metrics, one
    run) adds a row named "teacher", `constant` (the metrics of predicting one class for every sample,
    `metrics.constant_metrics`) a row named "constant": the floor every method must clear.
    """
    rows = []
    done = _finished(runs)
    for method in METHODS:
        mine = done[done["method"] == method] if len(done) else done
        row: dict[str, Any] = {"method": method, "n": int(len(mine))}
        for m in TEST_METRICS:
            col = f"test_{m}"
            iv = mean_interval(mine[col].astype(float).to_numpy() if col in mine and len(mine) else [])
            row |= {f"{m}_mean": iv.mean, f"{m}_std": iv.std, f"{m}_ci_low": iv.low, f"{m}_ci_high": iv.high}
        rows.append(row)
    for name, single in (("teacher", teacher), ("constant", constant)):
        if single:
            row = {"method": name, "n": 1}
            for m in TEST_METRICS:
                row |= {f"{m}_mean": float(single.get(m, math.nan))} | dict.fromkeys(
                    (f"{m}_std", f"{m}_ci_low", f"{m}_ci_high"), math.nan
                )
            rows.append(row)
    return pd.DataFrame(rows)


def floor_warnings(table: pd.DataFrame) -> list[str]:
    """One line for each method whose test F1 does not clear the constant prediction beyond its 95%
    interval (its mean, with a single seed), and for a teacher that does not beat the no-KD student
    (distilling from it cannot help)."""
    rows = {rec["method"]: rec for rec in table.to_dict("records")}
    out = []
    constant = rows.get("constant")
    for method in METHODS:
        rec = rows.get(method)
        if rec is None or constant is None or math.isnan(rec["f1_mean"]):
            continue
        low = rec["f1_mean"] if _nan(rec.get("f1_ci_low")) else rec["f1_ci_low"]
        if low <= constant["f1_mean"]:
            out.append(
                f"warning: {method}'s test F1 {rec['f1_mean']:.4f} does not beat predicting one class for every "
                f"sample (F1 {constant['f1_mean']:.4f}) beyond its 95% interval: it learned little or nothing"
            )
    teacher, plain = rows.get("teacher"), rows.get("no-KD")
    if teacher is not None and plain is not None and not math.isnan(plain["f1_mean"]):
        if teacher["f1_mean"] <= plain["f1_mean"]:
            out.append(
                f"warning: the teacher's test F1 {teacher['f1_mean']:.4f} does not beat the no-KD student's "
                f"({plain['f1_mean']:.4f}): distilling from this teacher cannot be expected to help"
            )
    return out


def _nan(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _finished(runs: pd.DataFrame) -> pd.DataFrame:
    return runs[runs["status"] == "TERMINATED"] if "status" in runs else runs


def method_comparisons(runs: pd.DataFrame, metric: str = "f1") -> pd.DataFrame:
    """One row per pair of PAIRS: the paired difference a − b of the test `metric` over the seeds both
    methods finished (columns a, b, metric, n, mean, std, ci_low, ci_high, p_t, p_wilcoxon, verdict, line)."""
    done = _finished(runs)
    col = f"test_{metric}"
    by_seed = done.pivot_table(index="seed", columns="method", values=col, aggfunc="first") if len(done) else None
    rows = []
    for a, b in PAIRS:
        if by_seed is not None and a in by_seed and b in by_seed:
            d = paired_difference(a, by_seed[a].to_numpy(float), b, by_seed[b].to_numpy(float))
        else:
            d = paired_difference(a, [], b, [])
        iv = d.diff
        rows.append(
            {"a": a, "b": b, "metric": metric, "n": iv.n, "mean": iv.mean, "std": iv.std, "ci_low": iv.low,
             "ci_high": iv.high, "p_t": d.p_t, "p_wilcoxon": d.p_wilcoxon, "verdict": d.verdict,
             "line": d.line(metric.upper() if metric != "accuracy" else metric)}
        )  # fmt: skip
    return pd.DataFrame(rows)


def method_gains(table: pd.DataFrame, metric: str = "f1") -> dict[str, float]:
    """Differences of the mean test `metric` between methods: SKD - KD and SKD - no-KD (NaN if missing)."""
    means = dict(zip(table["method"], table[f"{metric}_mean"]))
    skd = means.get("SKD", math.nan)
    return {"SKD - KD": skd - means.get("KD", math.nan), "SKD - no-KD": skd - means.get("no-KD", math.nan)}


def format_method_table(table: pd.DataFrame, comparisons: pd.DataFrame | None = None) -> str:
    """The table as aligned text, `mean ± std` per metric and the 95% interval of the mean F1, with
    each pair's verdict underneath (`comparisons`), or the plain F1 gains when there are none."""
    header = ["method", "seeds"] + [m if m != "auc" else "AUC" for m in TEST_METRICS] + ["f1 95% CI"]
    lines = [header]
    for rec in table.to_dict("records"):
        cells = [str(rec["method"]), str(rec["n"])]
        for m in TEST_METRICS:
            mean, std = rec[f"{m}_mean"], rec[f"{m}_std"]
            cells.append("-" if math.isnan(mean) else (f"{mean:.4f}" if math.isnan(std) else f"{mean:.4f} ± {std:.4f}"))
        low, high = rec.get("f1_ci_low", math.nan), rec.get("f1_ci_high", math.nan)
        cells.append("-" if low is None or math.isnan(low) else f"{low:.4f} to {high:.4f}")
        lines.append(cells)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines]
    if comparisons is not None and len(comparisons):
        return "\n".join(text + comparisons["line"].tolist() + floor_warnings(table))
    gains = method_gains(table)
    text.append(
        "F1 gains: "
        + ", ".join(f"{k} {v * 100:+.2f} points" if not math.isnan(v) else f"{k} -" for k, v in gains.items())
    )
    return "\n".join(text + floor_warnings(table))
