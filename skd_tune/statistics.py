"""The uncertainty of the method table: confidence intervals of a method's mean, and of the paired
difference between two methods, with a paired test. Pure numpy/scipy.

Each seed is one run of each method (the same seed for every method: paired runs). For `n` runs with
values x_1..x_n of a test metric:

- mean ± CI (Student's t): x̄ ± t_{0.975, n-1} · s / √n, s the sample standard deviation (ddof = 1).
  Assumes the runs are independent draws of a roughly normal quantity (seed-to-seed variation); with
  n < 2 there is no interval (NaN).
- the paired difference d_i = a_i − b_i of two methods on the same seed: its mean and t-interval as
  above, and the paired t-test (`scipy.stats.ttest_rel`, two-sided, H0: mean difference 0; assumes
  the differences are roughly normal). With 6 or more pairs also the Wilcoxon signed-rank test
  (`scipy.stats.wilcoxon`, two-sided, H0: the differences are symmetric about 0; no normality needed;
  with fewer than 6 pairs it cannot reach p < 0.05 at all, so it is not reported).
- the verdict: "better" / "worse" when the 95% interval of the difference excludes 0, else "within
  noise". An interval is a statement about seed-to-seed variation on this data and split, not about
  other data sets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["CONFIDENCE", "WILCOXON_MIN_PAIRS", "Interval", "PairedDifference", "mean_interval", "paired_difference"]

CONFIDENCE = 0.95
WILCOXON_MIN_PAIRS = 6


@dataclass(frozen=True)
class Interval:
    """The mean of `n` values, their sample std, and the t-interval of the mean (NaN below 2 values)."""

    n: int
    mean: float
    std: float
    low: float
    high: float


def mean_interval(values, confidence: float = CONFIDENCE) -> Interval:
    """Mean, sample std (ddof = 1) and Student's t confidence interval of the mean of `values` (NaNs dropped)."""
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    n = len(x)
    if n == 0:
        return Interval(0, math.nan, math.nan, math.nan, math.nan)
    mean = float(x.mean())
    if n < 2:
        return Interval(1, mean, math.nan, math.nan, math.nan)
    std = float(x.std(ddof=1))
    from scipy import stats  # imported on use: `skd-tune status` formats stored tables without it

    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)
    return Interval(n, mean, std, mean - half, mean + half)


@dataclass(frozen=True)
class PairedDifference:
    """a − b over paired runs: the interval of the mean difference and the paired tests' p-values."""

    a: str
    b: str
    diff: Interval
    p_t: float  # paired t-test (NaN below 2 pairs, or when every difference is the same)
    p_wilcoxon: float  # Wilcoxon signed-rank (NaN below WILCOXON_MIN_PAIRS pairs)

    @property
    def verdict(self) -> str:
        d = self.diff
        if d.n < 2 or math.isnan(d.low):
            return "not enough seeds to tell"
        if d.low > 0:
            return f"{self.a} better"
        if d.high < 0:
            return f"{self.b} better"
        return "within noise"

    def line(self, metric: str = "F1", scale: float = 100.0, unit: str = " points") -> str:
        """e.g. `SKD − KD: +0.65 F1 points (95% CI −0.40 to +1.70, p = 0.21, 5 seeds): within noise`."""
        d = self.diff
        head = f"{self.a} − {self.b}: {d.mean * scale:+.2f} {metric}{unit}"
        if d.n < 2 or math.isnan(d.low):
            return f"{head} ({d.n} seed{'s' if d.n != 1 else ''}): {self.verdict}"
        tests = f"p = {_p(self.p_t)}"
        if not math.isnan(self.p_wilcoxon):
            tests += f", Wilcoxon p = {_p(self.p_wilcoxon)}"
        ci = f"{CONFIDENCE:.0%} CI {d.low * scale:+.2f} to {d.high * scale:+.2f}"
        return f"{head} ({ci}, {tests}, {d.n} seeds): {self.verdict}"


def _p(p: float) -> str:
    return "n/a" if math.isnan(p) else (f"{p:.2g}" if p < 0.01 else f"{p:.2f}")


def paired_difference(a_name: str, a, b_name: str, b, confidence: float = CONFIDENCE) -> PairedDifference:
    """`a − b` for values paired by position (the same seed); pairs with a NaN on either side are dropped."""
    from scipy import stats

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired values need the same length, got {len(a)} and {len(b)}")
    keep = ~(np.isnan(a) | np.isnan(b))
    a, b = a[keep], b[keep]
    diff = mean_interval(a - b, confidence)
    p_t = p_w = math.nan
    if len(a) >= 2 and np.ptp(a - b) > 0:
        p_t = float(stats.ttest_rel(a, b).pvalue)
    elif len(a) >= 2 and np.all(a - b == 0):
        p_t = 1.0
    if len(a) >= WILCOXON_MIN_PAIRS and np.any(a - b != 0):
        p_w = float(stats.wilcoxon(a, b).pvalue)
    return PairedDifference(a_name, b_name, diff, p_t, p_w)
