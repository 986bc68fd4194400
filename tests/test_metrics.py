"""Tests of skd_tune.metrics against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from skd_tune.metrics import classification_metrics, label_bits, subclass_ami, subclass_information, subclass_usage

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


# ---------------------------------------------------------------------------------------------------
# subclass_usage and subclass_ami (invented subclasses)
# ---------------------------------------------------------------------------------------------------


def _one_hot(idx: np.ndarray, s: int, on: float = 0.9) -> np.ndarray:
    """(N, S) probabilities with `on` on subclass idx[n] and the rest spread evenly."""
    probs = np.full((len(idx), s), (1.0 - on) / (s - 1))
    probs[np.arange(len(idx)), idx] = on
    return probs


@pytest.mark.parametrize("k", [2, 3, 5])
def test_subclass_usage_all_in_one_subclass(k: int) -> None:
    # Two classes of K subclasses each; every example sits on its class's first subclass.
    s2c = np.repeat([0, 1], k)
    classes = np.array([0] * 30 + [1] * 50)
    sub = np.where(classes == 0, 0, k)
    out = subclass_usage(_one_hot(sub, 2 * k), classes, s2c)
    assert [c["class"] for c in out["per_class"]] == [0, 1]
    for c, n_c in zip(out["per_class"], (30, 50)):
        assert c["entropy_bits"] == 0.0
        assert c["max_entropy_bits"] == pytest.approx(math.log2(k), rel=1e-12)
        assert c["dead_share"] == pytest.approx((k - 1) / k)
        assert c["counts"] == [n_c] + [0] * (k - 1)
    assert out["dead_share"] == pytest.approx((k - 1) / k)


@pytest.mark.parametrize("k", [2, 3, 5])
def test_subclass_usage_uniform(k: int) -> None:
    s2c = np.repeat([0, 1], k)
    sub = np.repeat(np.arange(2 * k), 7)  # every subclass the argmax of 7 examples of its class
    classes = s2c[sub]
    out = subclass_usage(_one_hot(sub, 2 * k), classes, s2c)
    for c in out["per_class"]:
        assert c["entropy_bits"] == pytest.approx(math.log2(k), rel=1e-12)
        assert c["entropy_bits"] == pytest.approx(c["max_entropy_bits"], rel=1e-12)
        assert c["dead_share"] == 0.0
        assert c["counts"] == [7] * k
    assert out["dead_share"] == 0.0


def test_subclass_usage_by_hand() -> None:
    # Class 0 = subclasses {0, 1, 2}, class 1 = {3, 4}. S = 5.
    # Class 0: 200 examples with argmax counts (197, 2, 1): 2/200 = 1% is not dead (< 1% is),
    #   1/200 = 0.5% is -> dead_share 1/3; entropy = -(0.985 log2 0.985 + 0.01 log2 0.01 + 0.005 log2 0.005).
    # Class 1: 4 examples, counts (3, 1): entropy H(3/4, 1/4) = 0.811278, none dead.
    # Overall: 1 dead subclass of 5.
    s2c = np.array([0, 0, 0, 1, 1])
    sub = np.array([0] * 197 + [1] * 2 + [2] * 1 + [3] * 3 + [4])
    classes = s2c[sub]
    out = subclass_usage(_one_hot(sub, 5), classes, s2c)
    c0, c1 = out["per_class"]
    assert c0["counts"] == [197, 2, 1]
    h0 = -(0.985 * math.log2(0.985) + 0.01 * math.log2(0.01) + 0.005 * math.log2(0.005))
    # = 0.985 * 0.021805 + 0.01 * 6.643856 + 0.005 * 7.643856 = 0.021478 + 0.066439 + 0.038219
    assert h0 == pytest.approx(0.126135, abs=1e-6)
    assert c0["entropy_bits"] == pytest.approx(h0, rel=1e-12)
    assert c0["max_entropy_bits"] == pytest.approx(math.log2(3), rel=1e-12)
    assert c0["dead_share"] == pytest.approx(1 / 3)
    assert c1 == {
        "class": 1,
        "entropy_bits": pytest.approx(0.811278124, abs=1e-9),
        "max_entropy_bits": 1.0,
        "dead_share": 0.0,
        "counts": [3, 1],
    }
    assert out["dead_share"] == pytest.approx(1 / 5)


def test_subclass_usage_argmax_is_within_the_examples_class() -> None:
    # An example of class 0 whose overall argmax is a class-1 subclass still counts for class 0,
    # on its best class-0 subclass. Logits work as well as probabilities.
    s2c = np.array([0, 0, 1, 1])
    logits = np.array(
        [
            [1.0, 2.0, 9.0, 0.0],  # class 0, misclassified: counts for subclass 1
            [3.0, 0.0, 0.0, 0.0],  # class 0 -> subclass 0
            [0.0, 0.0, -1.0, -2.0],  # class 1 -> subclass 2
        ]
    )
    out = subclass_usage(logits, np.array([0, 0, 1]), s2c)
    assert out["per_class"][0]["counts"] == [1, 1]
    assert out["per_class"][0]["entropy_bits"] == pytest.approx(1.0)
    assert out["per_class"][1]["counts"] == [1, 0]
    assert out["dead_share"] == pytest.approx(1 / 4)


def test_subclass_usage_class_without_examples() -> None:
    # Class 1 has no examples: entropy 0, every one of its subclasses dead.
    s2c = np.array([0, 0, 1, 1, 1])
    out = subclass_usage(_one_hot(np.array([0, 1, 0, 1]), 5), np.zeros(4, dtype=int), s2c)
    assert out["per_class"][1] == {
        "class": 1,
        "entropy_bits": 0.0,
        "max_entropy_bits": pytest.approx(math.log2(3)),
        "dead_share": 1.0,
        "counts": [0, 0, 0],
    }
    assert out["per_class"][0]["dead_share"] == 0.0
    assert out["dead_share"] == pytest.approx(3 / 5)


def test_subclass_usage_rejects_wrong_shapes() -> None:
    with pytest.raises(ValueError):
        subclass_usage(np.zeros((3, 4)), np.zeros(3, dtype=int), np.array([0, 0, 1]))
    with pytest.raises(ValueError):
        subclass_usage(np.zeros((3, 3)), np.zeros(2, dtype=int), np.array([0, 0, 1]))


def test_subclass_ami_relabelled_perfect_match_is_one() -> None:
    rng = np.random.default_rng(0)
    true = rng.integers(0, 6, size=300)
    perm = np.array([3, 5, 0, 1, 4, 2])  # invented subclass names are arbitrary
    probs = _one_hot(perm[true], 6)
    assert subclass_ami(probs, true) == pytest.approx(1.0)
    # Logits (any monotone transform row-wise) give the same argmax and the same AMI.
    assert subclass_ami(np.log(probs) * 3.0 + 1.0, true) == pytest.approx(1.0)
    # Merging two true subclasses into one invented subclass loses information.
    merged = np.where(perm[true] == 5, 3, perm[true])
    assert 0.5 < subclass_ami(_one_hot(merged, 6), true) < 1.0


def test_subclass_ami_random_assignment_is_about_zero() -> None:
    rng = np.random.default_rng(1)
    n = 20000
    true = rng.integers(0, 4, size=n)
    logits = rng.normal(size=(n, 8))
    ami = subclass_ami(logits, true)
    assert isinstance(ami, float)
    assert abs(ami) < 0.005


# ---------------------------------------------------------------------------------------------------
# I_T(S; X | C): what the teacher's subclass probabilities carry beyond its class probabilities


def test_subclass_information_of_one_hot_rows_is_the_entropy_of_each_class_marginal():
    # class 0: outputs 0..2, its samples one-hot on 0, 0, 1, 2 -> marginal (1/2, 1/4, 1/4), H = 1.5 bits;
    # class 1: outputs 3..4, its 4 samples all on output 3 -> marginal (1, 0), H = 0.
    hot = np.array([0, 0, 1, 2, 3, 3, 3, 3])
    logits = np.full((8, 5), -1e4)
    logits[np.arange(8), hot] = 0.0
    classes = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    out = subclass_information(logits, classes, np.array([0, 0, 0, 1, 1]))
    assert out["per_class"] == pytest.approx([1.5, 0.0])
    assert out["bits"] == pytest.approx(0.5 * 1.5)
    assert out["max_bits"] == pytest.approx(0.5 * np.log2(3) + 0.5 * 1.0)


def test_subclass_information_of_identical_rows_is_zero_whatever_the_rows():
    row = np.array([2.0, -1.0, 0.5, 3.0, 0.0])  # far from uniform within each class
    logits = np.tile(row, (10, 1))
    classes = np.array([0] * 6 + [1] * 4)
    out = subclass_information(logits, classes, np.array([0, 0, 0, 1, 1]))
    assert out["bits"] == pytest.approx(0.0, abs=1e-12) and out["per_class"] == pytest.approx([0.0, 0.0], abs=1e-12)


def test_subclass_information_ignores_the_other_classes_outputs_and_is_bounded():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(200, 6)) * 3
    classes = rng.integers(0, 2, 200)
    o2c = np.array([0, 0, 0, 1, 1, 1])
    out = subclass_information(logits, classes, o2c)
    assert 0 < out["bits"] <= out["max_bits"] == pytest.approx(np.log2(3))
    shifted = logits.copy()
    shifted[classes == 0, 3:] += 50.0  # the other class's outputs of class-0 samples: no change
    shifted[classes == 1, 3:] += 7.0  # a constant on a class's own outputs: softmax unchanged
    assert subclass_information(shifted, classes, o2c)["bits"] == pytest.approx(out["bits"])
    # one output per class: nothing beyond the class
    assert subclass_information(logits[:, [0, 3]], classes, np.array([0, 1]))["bits"] == 0.0
    with pytest.raises(ValueError, match=r"need \(N, 6\) logits and \(N,\) classes"):
        subclass_information(logits[:, :5], classes, o2c)
