"""Tests of skd_tune.losses: a property suite shared by every loss, then hand-computed values.

The property suite follows the style of optuna/testing/pytest_samplers.py: one parametrized list of
loss "cases", each exercised by the same set of property tests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import pytest
import torch
import torch.nn.functional as F

from skd_tune.losses import DistillationLoss, class_logits, class_membership, kd_loss

# Three classes with 2, 3 and 1 subclasses: S = 6.
SUBCLASS_TO_CLASS = torch.tensor([0, 0, 1, 1, 1, 2])
MEMBERSHIP = class_membership(SUBCLASS_TO_CLASS)
NUM_SUBCLASSES = len(SUBCLASS_TO_CLASS)
BATCH = 8


def val(t: torch.Tensor) -> float:
    """A scalar tensor as a Python float (detached, so no autograd warning)."""
    return float(t.detach())


@dataclass(frozen=True)
class LossCase:
    """A loss under test: fn(student (B,S), teacher (B,S), class targets (B,), T) -> (loss, kd_part).

    `kd_part` is the sum of the distillation terms only (what must vanish when student == teacher);
    `w_ce` is the weight of the cross-entropy term that remains in `loss` in that case.
    """

    name: str
    fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float], tuple[torch.Tensor, torch.Tensor]]
    w_ce: float = 0.0


def _kd_class(s, t, y, temperature):
    loss = kd_loss(class_logits(s, MEMBERSHIP), class_logits(t, MEMBERSHIP), temperature)
    return loss, loss


def _skd(s, t, y, temperature):
    loss = kd_loss(s, t, temperature)
    return loss, loss


def _distillation(w_ce: float, w_kd: float, w_skd: float):
    def fn(s, t, y, temperature):
        obj = DistillationLoss(MEMBERSHIP, temperature=temperature, w_ce=w_ce, w_kd=w_kd, w_skd=w_skd)
        loss, parts = obj(s, t, y)
        kd_part = w_kd * parts.get("kd", torch.tensor(0.0)) + w_skd * parts.get("skd", torch.tensor(0.0))
        return loss, kd_part

    return fn


LOSS_CASES = [
    LossCase("kd_class", _kd_class),
    LossCase("skd_subclass", _skd),
    LossCase("distill_ce_skd", _distillation(1.0, 0.0, 1.0), w_ce=1.0),
    LossCase("distill_kd_only", _distillation(0.0, 1.0, 0.0), w_ce=0.0),
    LossCase("distill_all", _distillation(0.5, 2.0, 3.0), w_ce=0.5),
]

parametrize_loss = pytest.mark.parametrize("case", LOSS_CASES, ids=[c.name for c in LOSS_CASES])
parametrize_temperature = pytest.mark.parametrize("temperature", [1.0, 20.0])
parametrize_scale = pytest.mark.parametrize("scale", [1.0, 50.0])


def _inputs(seed: int, scale: float = 1.0):
    g = torch.Generator().manual_seed(seed)
    student = (torch.randn(BATCH, NUM_SUBCLASSES, generator=g) * scale).requires_grad_(True)
    teacher = (torch.randn(BATCH, NUM_SUBCLASSES, generator=g) * scale).requires_grad_(True)
    targets = torch.randint(0, 3, (BATCH,), generator=g)
    return student, teacher, targets


# ---------------------------------------------------------------------------------------------------
# Property suite
# ---------------------------------------------------------------------------------------------------


@parametrize_loss
@parametrize_temperature
@parametrize_scale
def test_gradients_are_finite(case: LossCase, temperature: float, scale: float) -> None:
    student, teacher, targets = _inputs(0, scale)
    loss, _ = case.fn(student, teacher, targets, temperature)
    assert loss.dim() == 0
    assert torch.isfinite(loss)
    loss.backward()
    assert student.grad is not None
    assert torch.isfinite(student.grad).all()
    # The student does learn something from this loss.
    assert student.grad.abs().sum() > 0


@parametrize_loss
@parametrize_temperature
@parametrize_scale
def test_kd_part_vanishes_when_student_equals_teacher(case: LossCase, temperature: float, scale: float) -> None:
    student, _, targets = _inputs(1, scale)
    teacher = student.detach().clone()
    loss, kd_part = case.fn(student, teacher, targets, temperature)
    assert val(kd_part) == pytest.approx(0.0, abs=1e-5)
    # Whatever is left is the cross-entropy term alone.
    ce = F.cross_entropy(class_logits(student.detach(), MEMBERSHIP), targets)
    assert val(loss) == pytest.approx(case.w_ce * val(ce), rel=1e-5, abs=1e-5)


@parametrize_loss
@parametrize_temperature
@pytest.mark.parametrize("seed", range(5))
def test_loss_is_non_negative(case: LossCase, temperature: float, seed: int) -> None:
    student, teacher, targets = _inputs(seed, scale=3.0)
    loss, kd_part = case.fn(student, teacher, targets, temperature)
    assert val(loss) >= 0.0
    assert val(kd_part) >= 0.0
    # Different random logits disagree, so the distillation term is strictly positive.
    assert val(kd_part) > 0.0


@parametrize_loss
@parametrize_temperature
def test_teacher_receives_no_gradient(case: LossCase, temperature: float) -> None:
    student, teacher, targets = _inputs(2)
    loss, _ = case.fn(student, teacher, targets, temperature)
    loss.backward()
    assert teacher.grad is None
    assert student.grad is not None


# ---------------------------------------------------------------------------------------------------
# Hand-computed values
# ---------------------------------------------------------------------------------------------------


def test_kd_loss_two_class_by_hand() -> None:
    # Student logits (0, 0) -> p_s = (1/2, 1/2); teacher logits (ln 3, 0) -> p_t = (3/4, 1/4).
    # KL(p_t || p_s) = 3/4 ln((3/4)/(1/2)) + 1/4 ln((1/4)/(1/2)) = 0.75 ln 1.5 + 0.25 ln 0.5
    #                = 0.75 * 0.405465108 - 0.25 * 0.693147181 = 0.130812036
    expected = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    assert expected == pytest.approx(0.130812036, abs=1e-9)
    student = torch.tensor([[0.0, 0.0]])
    teacher = torch.tensor([[math.log(3.0), 0.0]])
    assert val(kd_loss(student, teacher, 1.0)) == pytest.approx(expected, rel=1e-6)
    # The direction matters: KL(p_s || p_t) = 0.5 ln(2/3) + 0.5 ln 2 = 0.143841036, not the same.
    reverse = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    assert val(kd_loss(teacher, student, 1.0)) == pytest.approx(reverse, rel=1e-6)
    assert reverse != pytest.approx(expected, rel=1e-3)


def test_kd_loss_temperature_squared_scaling() -> None:
    # With T = 2, teacher logits (2 ln 3, 0) soften to (ln 3, 0), i.e. p_t = (3/4, 1/4) again,
    # so the KL is the same 0.130812036 and the loss is T^2 = 4 times it.
    kl = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    student = torch.tensor([[0.0, 0.0]])
    teacher = torch.tensor([[2.0 * math.log(3.0), 0.0]])
    assert val(kd_loss(student, teacher, 2.0)) == pytest.approx(4.0 * kl, rel=1e-6)
    # T = 5 on logits (5 ln 3, 0): 25 times the same KL.
    teacher5 = torch.tensor([[5.0 * math.log(3.0), 0.0]])
    assert val(kd_loss(student, teacher5, 5.0)) == pytest.approx(25.0 * kl, rel=1e-6)


def test_kd_loss_is_a_batch_mean() -> None:
    # Row 1 is the hand example above, row 2 agrees exactly (KL 0): the mean halves the KL.
    kl = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    student = torch.tensor([[0.0, 0.0], [1.0, 2.0]])
    teacher = torch.tensor([[math.log(3.0), 0.0], [1.0, 2.0]])
    assert val(kd_loss(student, teacher, 1.0)) == pytest.approx(kl / 2.0, rel=1e-6)


def test_class_membership_mask() -> None:
    expected = torch.tensor(
        [
            [True, True, False, False, False, False],
            [False, False, True, True, True, False],
            [False, False, False, False, False, True],
        ]
    )
    assert torch.equal(MEMBERSHIP, expected)
    # An explicit class count adds empty classes.
    assert class_membership(torch.tensor([0, 0, 1]), num_classes=3).shape == (3, 3)


def test_class_logits_by_hand() -> None:
    # Class 0 = subclasses {0, 1} with logits (ln 1, ln 3) -> logsumexp = ln 4;
    # class 1 = {2, 3, 4} with logits (ln 2, ln 2, ln 4) -> ln 8; class 2 = {5} with logit 0.7 -> 0.7.
    z = torch.tensor([[0.0, math.log(3.0), math.log(2.0), math.log(2.0), math.log(4.0), 0.7]], dtype=torch.float64)
    out = class_logits(z, MEMBERSHIP)
    assert out.shape == (1, 3)
    assert out[0].tolist() == pytest.approx([math.log(4.0), math.log(8.0), 0.7], rel=1e-12)


@pytest.mark.parametrize("scale", [1.0, 50.0])
def test_softmax_of_class_logits_is_sum_of_subclass_probabilities(scale: float) -> None:
    g = torch.Generator().manual_seed(3)
    z = torch.randn(16, NUM_SUBCLASSES, generator=g, dtype=torch.float64) * scale
    p_sub = torch.softmax(z, dim=1)
    summed = torch.stack(
        [p_sub[:, SUBCLASS_TO_CLASS == c].sum(dim=1) for c in range(3)], dim=1
    )
    p_class = torch.softmax(class_logits(z, MEMBERSHIP), dim=1)
    torch.testing.assert_close(p_class, summed, rtol=1e-10, atol=1e-12)


def test_skd_equals_kd_when_each_class_has_one_subclass() -> None:
    # A permutation map: every class has exactly one subclass, so class logits are the subclass
    # logits reordered and the class KL equals the subclass KL.
    s2c = torch.tensor([2, 0, 3, 1])
    membership = class_membership(s2c)
    g = torch.Generator().manual_seed(4)
    student = torch.randn(10, 4, generator=g)
    teacher = torch.randn(10, 4, generator=g)
    torch.testing.assert_close(class_logits(student, membership), student[:, [1, 3, 0, 2]])
    for temperature in (1.0, 4.0):
        kd = kd_loss(class_logits(student, membership), class_logits(teacher, membership), temperature)
        skd = kd_loss(student, teacher, temperature)
        assert val(kd) == pytest.approx(val(skd), rel=1e-5)
        # ... and so DistillationLoss's kd and skd parts agree.
        _, parts = DistillationLoss(membership, temperature=temperature, w_ce=0.0, w_kd=1.0, w_skd=1.0)(
            student, teacher, torch.zeros(10, dtype=torch.long)
        )
        assert val(parts["kd"]) == pytest.approx(val(parts["skd"]), rel=1e-5)


def test_skd_differs_from_kd_with_several_subclasses() -> None:
    # Guard for the test above: with real subclasses the two losses are different quantities.
    student, teacher, _ = _inputs(5)
    kd = kd_loss(class_logits(student, MEMBERSHIP), class_logits(teacher, MEMBERSHIP), 1.0)
    skd = kd_loss(student, teacher, 1.0)
    assert val(skd) != pytest.approx(val(kd), rel=1e-3)


def test_no_kd_equals_plain_cross_entropy_and_accepts_no_teacher() -> None:
    student, _, targets = _inputs(6)
    obj = DistillationLoss(MEMBERSHIP, temperature=4.0, w_ce=1.0, w_kd=0.0, w_skd=0.0)
    loss, parts = obj(student, None, targets)
    assert set(parts) == {"ce"}
    # CE from first principles: -log of the summed subclass probabilities of the true class.
    p_sub = torch.softmax(student.detach().double(), dim=1)
    p_true = torch.stack([p_sub[b, SUBCLASS_TO_CLASS == targets[b]].sum() for b in range(BATCH)])
    expected = val(-torch.log(p_true).mean())
    assert val(loss) == pytest.approx(expected, rel=1e-5)
    assert val(loss) == pytest.approx(val(F.cross_entropy(class_logits(student, MEMBERSHIP), targets)), rel=1e-6)
    assert val(parts["ce"]) == pytest.approx(val(loss), rel=1e-6)
    assert not parts["ce"].requires_grad


def test_distillation_loss_is_weighted_sum_of_parts() -> None:
    student, teacher, targets = _inputs(7)
    obj = DistillationLoss(MEMBERSHIP, temperature=3.0, w_ce=0.5, w_kd=2.0, w_skd=3.0)
    loss, parts = obj(student, teacher, targets)
    assert set(parts) == {"ce", "kd", "skd"}
    ce = F.cross_entropy(class_logits(student, MEMBERSHIP), targets)
    kd = kd_loss(class_logits(student, MEMBERSHIP), class_logits(teacher, MEMBERSHIP), 3.0)
    skd = kd_loss(student, teacher, 3.0)
    assert val(parts["ce"]) == pytest.approx(val(ce), rel=1e-6)
    assert val(parts["kd"]) == pytest.approx(val(kd), rel=1e-6)
    assert val(parts["skd"]) == pytest.approx(val(skd), rel=1e-6)
    assert val(loss) == pytest.approx(0.5 * val(ce) + 2.0 * val(kd) + 3.0 * val(skd), rel=1e-6)


@pytest.mark.parametrize("weights", [(1.0, 0.0, 1.0), (1.0, 1.0, 0.0), (0.0, 0.5, 0.5)], ids=["skd", "kd", "both"])
def test_distillation_without_teacher_raises(weights) -> None:
    w_ce, w_kd, w_skd = weights
    student, _, targets = _inputs(8)
    obj = DistillationLoss(MEMBERSHIP, w_ce=w_ce, w_kd=w_kd, w_skd=w_skd)
    with pytest.raises(ValueError, match=r"w_kd or w_skd > 0 needs the teacher's subclass logits, got None"):
        obj(student, None, targets)
