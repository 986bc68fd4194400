"""Tests of skd_tune.metrics against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from skd_tune.metrics import classification_metrics, label_bits

# ---------------------------------------------------------------------------------------------------
# label_bits = H(S | C) in bits
# ---------------------------------------------------------------------------------------------------


def test_label_bits_one_subclass_per_class_is_zero() -> None:
    # The subclass is the class: it adds no information.
    subclass = np.array([0, 1, 1, 0, 1, 1, 1])
    assert label_bits(subclass, np.array([0, 1])) == 0.0
    # Same with a permuted map and three classes.
    assert label_bits(np.array([0, 1, 2, 2, 1]), np.array([2, 0, 1])) == 0.0


def test_label_bits_uniform_five_subclasses_per_class() -> None:
    # Two classes of five subclasses each, every subclass seen 10 times: H(S|C) = log2 5 = 2.321928.
    s2c = np.array([0] * 5 + [1] * 5)
    subclass = np.repeat(np.arange(10), 10)
    assert label_bits(subclass, s2c) == pytest.approx(math.log2(5), rel=1e-12)
    assert math.log2(5) == pytest.approx(2.321928095, abs=1e-9)


def test_label_bits_unbalanced_by_hand() -> None:
    # Class 0 = subclasses {0, 1} seen 3 and 1 times; class 1 = subclass {2} seen 4 times. N = 8.
    # H(S|C=0) = -(3/4 log2 3/4 + 1/4 log2 1/4) = 0.75 * 0.415037 + 0.25 * 2 = 0.811278
    # H(S|C=1) = 0
    # H(S|C)   = 4/8 * 0.811278 + 4/8 * 0 = 0.405639
    s2c = np.array([0, 0, 1])
    subclass = np.array([0, 0, 0, 1, 2, 2, 2, 2])
    expected = 0.5 * -(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25))
    assert expected == pytest.approx(0.405639062, abs=1e-9)
    assert label_bits(subclass, s2c) == pytest.approx(expected, rel=1e-12)


def test_label_bits_unbalanced_classes_weighted_by_class_frequency() -> None:
    # Class 0 = {0, 1} seen 1 and 1 time (1 bit); class 1 = {2, 3} seen 3 and 3 times (1 bit) -> 1 bit.
    # Class 1 = {2, 3} seen 5 and 1 times instead: H = 2/8 * 1 + 6/8 * H(5/6, 1/6).
    s2c = np.array([0, 0, 1, 1])
    assert label_bits(np.array([0, 1, 2, 2, 2, 3, 3, 3]), s2c) == pytest.approx(1.0, rel=1e-12)
    h = -(5 / 6 * math.log2(5 / 6) + 1 / 6 * math.log2(1 / 6))  # 0.650022
    expected = 2 / 8 * 1.0 + 6 / 8 * h  # 0.737517
    assert expected == pytest.approx(0.737516816, abs=1e-9)
    assert label_bits(np.array([0, 1, 2, 2, 2, 2, 2, 3]), s2c) == pytest.approx(expected, rel=1e-12)


def test_label_bits_ignores_unseen_subclasses_and_classes() -> None:
    # Subclass 2 (class 0) and the whole class 2 (subclass 4) never occur: same value as without them.
    s2c = np.array([0, 0, 0, 1, 2])
    subclass = np.array([0, 0, 0, 1, 3, 3, 3, 3])
    expected = 0.5 * -(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25))
    assert label_bits(subclass, s2c) == pytest.approx(expected, rel=1e-12)


# ---------------------------------------------------------------------------------------------------
# classification_metrics
# ---------------------------------------------------------------------------------------------------

# Six samples, two classes. p(class 1) per sample; predictions are argmax (threshold 0.5).
Y_BINARY = np.array([0, 0, 0, 0, 1, 1])
P1 = np.array([0.1, 0.2, 0.7, 0.6, 0.9, 0.4])
PROBS_BINARY = np.stack([1 - P1, P1], axis=1)
# predicted:        0    0    1    1    1    0


def test_binary_metrics_positive_class_one_by_hand() -> None:
    m = classification_metrics(Y_BINARY, PROBS_BINARY, positive_class=1)
    assert set(m) == {"f1", "accuracy", "auc", "precision", "recall"}
    assert all(isinstance(v, float) for v in m.values())
    # Class 1: TP = 1 (sample 4), FP = 2 (samples 2, 3), FN = 1 (sample 5).
    assert m["precision"] == pytest.approx(1 / 3)
    assert m["recall"] == pytest.approx(1 / 2)
    assert m["f1"] == pytest.approx(2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2))  # = 0.4
    assert m["f1"] == pytest.approx(0.4)
    assert m["accuracy"] == pytest.approx(3 / 6)
    # AUC: positives score {0.9, 0.4}, negatives {0.1, 0.2, 0.7, 0.6}; 0.9 beats 4, 0.4 beats 2 -> 6/8.
    assert m["auc"] == pytest.approx(6 / 8)


def test_binary_metrics_positive_class_zero_by_hand() -> None:
    m = classification_metrics(Y_BINARY, PROBS_BINARY, positive_class=0)
    # Class 0: predicted {0, 1, 5}, true {0, 1, 2, 3}: TP = 2, FP = 1, FN = 2.
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 4)
    assert m["f1"] == pytest.approx(4 / 7)
    assert m["accuracy"] == pytest.approx(3 / 6)
    # Ranking by p(class 0) = 1 - p(class 1) gives the same 6/8.
    assert m["auc"] == pytest.approx(6 / 8)


def test_auc_is_nan_with_a_single_class() -> None:
    y = np.array([1, 1, 1])
    probs = np.array([[0.2, 0.8], [0.6, 0.4], [0.1, 0.9]])
    m = classification_metrics(y, probs, positive_class=1)
    assert math.isnan(m["auc"])
    # The other metrics are still defined: predicted (1, 0, 1) -> TP 2, FN 1, FP 0.
    assert m["accuracy"] == pytest.approx(2 / 3)
    assert m["precision"] == pytest.approx(1.0)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(0.8)


def test_no_positive_predictions_give_zero_not_nan() -> None:
    # zero_division=0: precision of a class never predicted is 0, not a warning or NaN.
    y = np.array([0, 0, 1, 1])
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.6, 0.4]])
    m = classification_metrics(y, probs, positive_class=1)
    assert m["precision"] == 0.0
    assert m["recall"] == 0.0
    assert m["f1"] == 0.0
    assert m["auc"] == pytest.approx(1.0)  # the ranking is still perfect


def _auc_by_pairs(pos_scores: np.ndarray, neg_scores: np.ndarray) -> float:
    """Mann-Whitney AUC: share of (positive, negative) pairs ranked right, ties counting 1/2."""
    wins = sum((p > n) + 0.5 * (p == n) for p in pos_scores for n in neg_scores)
    return wins / (len(pos_scores) * len(neg_scores))


def test_multiclass_macro_by_hand() -> None:
    y = np.array([0, 0, 1, 1, 2, 2])
    # Rows deliberately sum to 2, not 1: the AUC path must normalise them first.
    probs = 2.0 * np.array(
        [
            [0.6, 0.3, 0.1],  # pred 0 (right)
            [0.2, 0.5, 0.3],  # pred 1 (wrong)
            [0.1, 0.8, 0.1],  # pred 1
            [0.3, 0.4, 0.3],  # pred 1
            [0.1, 0.2, 0.7],  # pred 2
            [0.5, 0.1, 0.4],  # pred 0 (wrong)
        ]
    )
    m = classification_metrics(y, probs, positive_class=1)
    # Per class (precision, recall, F1): 0 -> (1/2, 1/2, 1/2); 1 -> (2/3, 1, 4/5); 2 -> (1, 1/2, 2/3).
    assert m["precision"] == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    assert m["recall"] == pytest.approx((1 / 2 + 1 + 1 / 2) / 3)
    assert m["f1"] == pytest.approx((1 / 2 + 4 / 5 + 2 / 3) / 3)
    assert m["accuracy"] == pytest.approx(4 / 6)
    # One-vs-rest macro AUC, each class scored by its normalised probability.
    p = probs / probs.sum(axis=1, keepdims=True)
    expected_auc = np.mean([_auc_by_pairs(p[y == c, c], p[y != c, c]) for c in range(3)])
    assert m["auc"] == pytest.approx(expected_auc)
    # Worked out: class 0 -> 6/8 (0.6 beats 4 negatives, 0.2 beats 2), class 1 -> 7/8, class 2 -> 8/8.
    assert expected_auc == pytest.approx((6 / 8 + 7 / 8 + 8 / 8) / 3)
    assert m["auc"] == pytest.approx(0.875)
