"""The method table's statistics against scipy, on constructed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from skd_tune.statistics import WILCOXON_MIN_PAIRS, mean_interval, paired_difference


def test_mean_interval_is_student_s_t():
    x = np.array([0.91, 0.93, 0.90, 0.95, 0.92])
    iv = mean_interval(x)
    low, high = stats.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=stats.sem(x))
    assert (iv.n, iv.mean, iv.std) == (5, pytest.approx(x.mean()), pytest.approx(x.std(ddof=1)))
    assert (iv.low, iv.high) == (pytest.approx(low), pytest.approx(high))
    assert mean_interval([0.9, math.nan, 0.8]).n == 2  # NaN (a failed run) dropped
    one = mean_interval([0.9])
    assert one.n == 1 and one.mean == 0.9 and math.isnan(one.low) and math.isnan(one.std)
    assert mean_interval([]).n == 0


def test_paired_difference_matches_ttest_rel_and_wilcoxon():
    rng = np.random.default_rng(0)
    base = rng.normal(0.9, 0.02, size=8)
    a, b = base + 0.01 + rng.normal(0, 0.003, 8), base
    pd_ = paired_difference("SKD", a, "KD", b)
    d = a - b
    assert pd_.diff.mean == pytest.approx(d.mean())
    low, high = stats.t.interval(0.95, 7, loc=d.mean(), scale=stats.sem(d))
    assert (pd_.diff.low, pd_.diff.high) == (pytest.approx(low), pytest.approx(high))
    assert pd_.p_t == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert pd_.p_wilcoxon == pytest.approx(stats.wilcoxon(a, b).pvalue)
    assert pd_.verdict == "SKD better" and low > 0
    line = pd_.line()
    assert line.startswith(f"SKD − KD: {d.mean() * 100:+.2f} F1 points (95% CI ") and line.endswith(
        "8 seeds): SKD better"
    )


def test_verdicts_within_noise_worse_and_too_few_seeds():
    noisy = paired_difference("SKD", [0.90, 0.95, 0.91], "KD", [0.93, 0.90, 0.92])
    assert noisy.verdict == "within noise" and noisy.diff.low < 0 < noisy.diff.high
    assert math.isnan(noisy.p_wilcoxon)  # fewer than WILCOXON_MIN_PAIRS pairs
    assert WILCOXON_MIN_PAIRS == 6
    worse = paired_difference("SKD", [0.80, 0.81, 0.79], "no-KD", [0.90, 0.92, 0.91])
    assert worse.verdict == "no-KD better"
    single = paired_difference("SKD", [0.9], "KD", [0.8])
    assert single.verdict == "not enough seeds to tell" and "(1 seed)" in single.line()
    same = paired_difference("KD", [0.9, 0.8], "no-KD", [0.9, 0.8])
    assert same.p_t == 1.0 and same.verdict == "within noise"


def test_pairs_with_a_failed_run_are_dropped_and_lengths_must_match():
    d = paired_difference("SKD", [0.9, math.nan, 0.92], "KD", [0.88, 0.9, math.nan])
    assert d.diff.n == 1
    with pytest.raises(ValueError, match="same length"):
        paired_difference("SKD", [0.9, 0.8], "KD", [0.9])
