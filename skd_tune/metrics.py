"""Evaluation metrics (scikit-learn) and the label information that subclasses add."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    adjusted_mutual_info_score,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

__all__ = [
    "classification_metrics",
    "constant_metrics",
    "label_bits",
    "subclass_ami",
    "subclass_information",
    "subclass_usage",
]

DEAD_SHARE_THRESHOLD = 0.01  # a subclass is "dead" if it is the argmax of < 1% of its class's examples


def classification_metrics(y_true: np.ndarray, class_probs: np.ndarray, positive_class: int = 1) -> dict[str, float]:
    """F1, accuracy, AUC, precision and recall from true class indices (N,) and class probabilities (N, C).

    With two classes, F1/precision/recall are those of `positive_class` and AUC uses its
    probability; with more, they are macro averages and AUC is one-vs-rest. AUC is NaN when the
    labels hold a single class.
    """
    y_true = np.asarray(y_true)
    class_probs = np.asarray(class_probs, dtype=np.float64)
    y_pred = class_probs.argmax(axis=1)
    binary = class_probs.shape[1] == 2
    kw = {"pos_label": positive_class, "average": "binary"} if binary else {"average": "macro"}
    out = {
        "f1": f1_score(y_true, y_pred, zero_division=0, **kw),
        "accuracy": accuracy_score(y_true, y_pred),
        "precision": precision_score(y_true, y_pred, zero_division=0, **kw),
        "recall": recall_score(y_true, y_pred, zero_division=0, **kw),
    }
    if len(np.unique(y_true)) < 2:
        out["auc"] = float("nan")
    elif binary:
        out["auc"] = roc_auc_score(y_true == positive_class, class_probs[:, positive_class])
    else:
        probs = class_probs / class_probs.sum(axis=1, keepdims=True)
        out["auc"] = roc_auc_score(y_true, probs, multi_class="ovr", labels=np.arange(class_probs.shape[1]))
    return {k: float(v) for k, v in out.items()}


def constant_metrics(
    y_true: np.ndarray, y_train: np.ndarray, num_classes: int, positive_class: int = 1
) -> tuple[str, dict[str, float]]:
    """The floor under every score: a model that ignores its input and predicts one class for every
    sample. Of "always the positive class" and "always the training split's majority class", the one
    with the higher F1 on `y_true`; returns (which one, its metrics). AUC of a constant is 0.5 (NaN when
    `y_true` holds one class)."""
    majority = int(np.bincount(np.asarray(y_train), minlength=num_classes).argmax())
    best: tuple[str, dict[str, float]] | None = None
    for name, cls in (("always positive", positive_class), ("always the majority class", majority)):
        probs = np.zeros((len(y_true), num_classes))
        probs[:, cls] = 1.0
        scores = classification_metrics(y_true, probs, positive_class)
        if best is None or scores["f1"] > best[1]["f1"]:
            best = (name, scores)
    return best


def label_bits(subclass: np.ndarray, subclass_to_class: np.ndarray) -> float:
    """H(S | C) in bits: the label information per sample that an annotation scheme's subclasses add to
    the class label.

        H(S|C) = - sum_{c} p(c) sum_{s in c} p(s|c) log2 p(s|c),  with empirical frequencies.

    Args: `subclass` (N,) int labels, `subclass_to_class` (S,) int. Limiting cases: one subclass per
    class gives 0; K equally frequent subclasses in every class give log2 K.

    On MHIST's real votes (train partition), the 8 agreement levels give 1.920 bits and unanimous vs
    not 0.932. Sajedi et al. (2022) report 0.4656 bits for their MHIST subclasses, but no grouping of
    the vote levels gives that figure (the closest, 0.450, keeps HP whole and splits SSA into 7 | 6 |
    4-5): it is not the entropy of an annotation scheme, and this function does not reproduce it. What
    the teacher's subclass probabilities carry is `subclass_information`.
    """
    subclass = np.asarray(subclass)
    s2c = np.asarray(subclass_to_class)
    counts = np.bincount(subclass, minlength=len(s2c)).astype(np.float64)
    n = counts.sum()
    bits = 0.0
    for c in np.unique(s2c):
        cc = counts[s2c == c]
        nc = cc.sum()
        if nc == 0:
            continue
        p = cc[cc > 0] / nc
        bits += (nc / n) * float(-(p * np.log2(p)).sum())
    return bits


def _entropy_bits(p: np.ndarray) -> np.ndarray:
    """Entropy in bits of each row of `p` (rows sum to 1), with 0 log 0 = 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log2(np.where(p > 0, p, 1.0)), 0.0)
    return -terms.sum(axis=-1)


def subclass_information(logits: np.ndarray, classes: np.ndarray, output_to_class: np.ndarray) -> dict:
    """I_T(S; X | C) in bits: the information in the teacher's subclass probabilities beyond its class
    probabilities, i.e. what subclass distillation transfers that class distillation cannot.

        p_T(s | c, x) = softmax over c's outputs of the teacher's logits of x   (renormalised within c)
        I_T(S; X | C) = sum_c p(c) [ H( mean_{x in c} p_T(s | c, x) ) - mean_{x in c} H( p_T(s | c, x) ) ]

    with the means over the samples x whose true class is c, p(c) their share, entropies in bits. Per
    class it is the mutual information between the sample and the teacher's subclass within c (a
    generalised Jensen-Shannon divergence of the rows), so 0 <= I_c <= log2 K_c.

    Limiting cases: a teacher whose rows are identical within a class (the subclass tells nothing about
    the image) gives 0; one-hot rows within a class give H of that class's argmax marginal (the
    teacher's own hard partition, as H(S|C) is the annotators'); one output per class gives 0.

    Args:
        logits: (N, S_out) teacher logits (known subclasses, or invented ones, K_c outputs of class c).
        classes: (N,) true class of each sample.
        output_to_class: (S_out,) class of each output.
    Returns:
        {"bits": I_T, "per_class": [I_c for each class in sorted order], "max_bits": sum_c p(c) log2 K_c}.
    """
    z = np.asarray(logits, dtype=np.float64)
    classes = np.asarray(classes)
    o2c = np.asarray(output_to_class)
    if z.ndim != 2 or z.shape[1] != len(o2c) or len(classes) != len(z):
        raise ValueError(f"need (N, {len(o2c)}) logits and (N,) classes, got {z.shape} and {classes.shape}")
    total, bound, per_class = 0.0, 0.0, []
    for c in np.unique(o2c):
        rows = z[classes == c][:, o2c == c]
        if len(rows) == 0:
            per_class.append(0.0)
            continue
        rows = rows - rows.max(axis=1, keepdims=True)
        p = np.exp(rows)
        p /= p.sum(axis=1, keepdims=True)
        info = float(_entropy_bits(p.mean(axis=0)) - _entropy_bits(p).mean())
        info = max(info, 0.0)  # rounding can give -1e-16
        per_class.append(info)
        share = len(rows) / len(z)
        total += share * info
        bound += share * float(np.log2(rows.shape[1]))
    return {"bits": total, "per_class": per_class, "max_bits": bound}


def subclass_usage(subclass_probs: np.ndarray, classes: np.ndarray, subclass_to_class: np.ndarray) -> dict:
    """How invented subclasses use their capacity, class by class.

    For each class c with subclasses s in c (K_c of them) and the N_c examples whose class is c, each
    example is assigned to its argmax subclass *among c's subclasses* (the other classes' subclasses
    are ignored, so this is defined whatever the class prediction), and with n_s the count of s:

        p(s|c)           = n_s / N_c
        entropy_bits     = - sum_{s in c, n_s > 0} p(s|c) log2 p(s|c)      (0 <= . <= log2 K_c)
        max_entropy_bits = log2 K_c
        dead_share       = |{s in c : n_s < 0.01 * N_c}| / K_c             ("dead": argmax of < 1% of c)

    A class with no examples has entropy 0, counts 0 and every subclass dead. The overall
    `dead_share` is over all S subclasses: sum_c (number of dead subclasses of c) / S.

    Args:
        subclass_probs: (N, S) subclass probabilities (or logits: only the argmax within a class is used).
        classes: (N,) int class index of each example (true labels, normally).
        subclass_to_class: (S,) int class of each subclass.
    Returns:
        {"per_class": [{"class": c, "entropy_bits", "max_entropy_bits", "dead_share", "counts": [n_s for
        s in c, in subclass order]}, ... for each class in sorted order], "dead_share": float}.
    """
    probs = np.asarray(subclass_probs, dtype=np.float64)
    classes = np.asarray(classes)
    s2c = np.asarray(subclass_to_class)
    if probs.ndim != 2 or probs.shape[1] != len(s2c):
        raise ValueError(f"subclass_probs must be (N, {len(s2c)}), got shape {probs.shape}")
    if len(classes) != len(probs):
        raise ValueError(f"classes has {len(classes)} entries, subclass_probs has {len(probs)} rows")
    per_class = []
    n_dead = 0
    for c in np.unique(s2c):
        members = np.flatnonzero(s2c == c)
        k = len(members)
        rows = probs[classes == c][:, members]
        n_c = len(rows)
        counts = np.bincount(rows.argmax(axis=1), minlength=k) if n_c else np.zeros(k, dtype=np.int64)
        if n_c:
            p = counts[counts > 0] / n_c
            entropy = float(-(p * np.log2(p)).sum())
        else:
            entropy = 0.0
        dead = int((counts < DEAD_SHARE_THRESHOLD * n_c).sum()) if n_c else k
        n_dead += dead
        per_class.append(
            {
                "class": int(c),
                "entropy_bits": entropy + 0.0,  # no -0.0
                "max_entropy_bits": float(np.log2(k)),
                "dead_share": dead / k,
                "counts": [int(n) for n in counts],
            }
        )
    return {"per_class": per_class, "dead_share": n_dead / len(s2c)}


def subclass_ami(subclass_probs_or_logits: np.ndarray, true_subclass: np.ndarray) -> float:
    """Adjusted mutual information between the known subclasses and the argmax invented subclass.

        AMI(U, V) = (I(U; V) - E[I(U; V)]) / (mean(H(U), H(V)) - E[I(U; V)])

    with U the true subclass labels (N,), V = argmax_s of (N, S) probabilities or logits (the same
    argmax), E[.] the expectation under random labellings with the same cluster sizes, and the
    arithmetic mean (scikit-learn's `adjusted_mutual_info_score` default). It is invariant to
    renaming the invented subclasses: 1 for a relabelled perfect match, about 0 for chance.
    """
    scores = np.asarray(subclass_probs_or_logits)
    true_subclass = np.asarray(true_subclass)
    if scores.ndim != 2 or len(scores) != len(true_subclass):
        raise ValueError(f"need (N, S) scores and (N,) labels, got {scores.shape} and {true_subclass.shape}")
    return float(adjusted_mutual_info_score(true_subclass, scores.argmax(axis=1)))
