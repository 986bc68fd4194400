"""Tests of skd_tune.losses: a property suite shared by every loss, then hand-computed values.

The property suite follows the style of optuna/testing/pytest_samplers.py: one parametrized list of
loss "cases", each exercised by the same set of property tests.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

from skd_tune.losses import (
    DistillationLoss,
    TeacherLoss,
    class_logits,
    class_membership,
    invented_subclass_loss,
    kd_loss,
)

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


# Teacher objectives with invented subclasses (Müller et al. 2020): they take no teacher, the
# "temperature" argument is T_aux, and they have no distillation part (kd_part = 0). They join the
# properties that do not involve a teacher to match (finite gradients, constant logits, no gradient
# into the unused teacher); L_aux is negative by design, so not the non-negativity one.
def _aux(s, t, y, temperature):
    return invented_subclass_loss(s, temperature), torch.tensor(0.0)


def _teacher(beta: float):
    def fn(s, t, y, temperature):
        loss, _ = TeacherLoss(MEMBERSHIP, beta=beta, t_aux=temperature)(s, y)
        return loss, torch.tensor(0.0)

    return fn


TEACHER_CASES = [
    LossCase("invented_aux", _aux),
    LossCase("teacher_beta1", _teacher(1.0), w_ce=1.0),
    LossCase("teacher_beta3", _teacher(3.0), w_ce=1.0),
]
ALL_CASES = LOSS_CASES + TEACHER_CASES

parametrize_loss = pytest.mark.parametrize("case", LOSS_CASES, ids=[c.name for c in LOSS_CASES])
parametrize_any_loss = pytest.mark.parametrize("case", ALL_CASES, ids=[c.name for c in ALL_CASES])
parametrize_temperature = pytest.mark.parametrize("temperature", [1.0, 20.0])
parametrize_wide_temperature = pytest.mark.parametrize("temperature", [0.1, 1.0, 20.0])
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


@parametrize_any_loss
@parametrize_wide_temperature
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


@parametrize_any_loss
@parametrize_temperature
def test_teacher_receives_no_gradient(case: LossCase, temperature: float) -> None:
    student, teacher, targets = _inputs(2)
    loss, _ = case.fn(student, teacher, targets, temperature)
    loss.backward()
    assert teacher.grad is None
    assert student.grad is not None


@parametrize_any_loss
@parametrize_wide_temperature
@pytest.mark.parametrize("level", [0.0, 3.0, -50.0])
def test_constant_logits_give_finite_loss_and_gradients(case: LossCase, temperature: float, level: float) -> None:
    # Constant rows: zero variance, the edge case of the per-example standardisation.
    _, teacher, targets = _inputs(9)
    student = torch.full((BATCH, NUM_SUBCLASSES), level, requires_grad=True)
    loss, _ = case.fn(student, teacher, targets, temperature)
    assert torch.isfinite(loss)
    loss.backward()
    assert student.grad is not None
    assert torch.isfinite(student.grad).all()


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
    summed = torch.stack([p_sub[:, SUBCLASS_TO_CLASS == c].sum(dim=1) for c in range(3)], dim=1)
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


# ---------------------------------------------------------------------------------------------------
# invented_subclass_loss (L_aux of Müller et al. 2020) and TeacherLoss
# ---------------------------------------------------------------------------------------------------


def _aux_reference(rows: list[list[float]], t_aux: float, eps: float = 0.0) -> float:
    """L_aux from the formula in plain Python (no torch), independent of the implementation.

    z_i = (x_i - mean(x_i)) / sqrt(var(x_i) + eps) / sqrt(T * S);  L = mean_i logsumexp_j z_i.z_j - 1/T - log B.
    """
    b, s = len(rows), len(rows[0])
    z = []
    for row in rows:
        mean = sum(row) / s
        var = sum((v - mean) ** 2 for v in row) / s
        z.append([(v - mean) / math.sqrt(var + eps) / math.sqrt(t_aux * s) for v in row])
    total = 0.0
    for i in range(b):
        dots = [sum(a * c for a, c in zip(z[i], z[j])) for j in range(b)]
        top = max(dots)
        total += top + math.log(sum(math.exp(d - top) for d in dots))
    return total / b - 1.0 / t_aux - math.log(b)


def aux_lower_bound(b: int, t_aux: float) -> float:
    """min over B examples of L_aux: log((1 + (B-1) exp(-B / ((B-1) T))) / B), reached iff B <= S."""
    return math.log((1.0 + (b - 1) * math.exp(-b / ((b - 1) * t_aux))) / b)


# B = 3, S = 4. Standardised, the rows are a = (1,-1,1,-1), b = (1,1,-1,-1), c = (3,1,-1,-3)/sqrt(5)
# (each with squared norm S = 4); the inputs are them shifted and scaled per row:
#   a' = a + 5,  b' = 2 b - 1,  c' = (3,1,-1,-3) / 2 + 2.
# Cosines: a.b = 0, a.c = (3-1-1+3) / (4 sqrt 5) = 1/sqrt 5, b.c = (3+1+1+3) / (4 sqrt 5) = 2/sqrt 5,
# so with T = 1 the dot products are d = [[1, 0, 1/sqrt5], [0, 1, 2/sqrt5], [1/sqrt5, 2/sqrt5, 1]] and
#   L = (1/3) [log(e + 1 + e^0.447214) + log(1 + e + e^0.894427) + log(e^0.447214 + e^0.894427 + e)] - 1 - log 3
#     = -0.3021417.
HAND_ROWS = [[6.0, 4.0, 6.0, 4.0], [1.0, 1.0, -3.0, -3.0], [3.5, 2.5, 1.5, 0.5]]


@pytest.mark.parametrize("t_aux", [0.5, 1.0, 3.0])
def test_invented_subclass_loss_by_hand(t_aux: float) -> None:
    r5 = 1.0 / math.sqrt(5.0)
    d = [[1.0, 0.0, r5], [0.0, 1.0, 2 * r5], [r5, 2 * r5, 1.0]]
    by_hand = sum(math.log(sum(math.exp(v / t_aux) for v in row)) for row in d) / 3 - 1.0 / t_aux - math.log(3.0)
    if t_aux == 1.0:
        # (1/3) [log 5.282237 + log 6.164278 + log 6.728238] - 1 - log 3 = 1.796459 - 2.098612
        assert by_hand == pytest.approx(-0.3021417, abs=1e-6)
    # The plain-Python standardisation of the shifted/scaled rows reproduces the same dot products.
    assert _aux_reference(HAND_ROWS, t_aux) == pytest.approx(by_hand, rel=1e-12)
    x = torch.tensor(HAND_ROWS, dtype=torch.float64)
    assert val(invented_subclass_loss(x, t_aux, eps=0.0)) == pytest.approx(by_hand, rel=1e-12)
    # With the default eps the value moves by O(eps / var) only ...
    default = val(invented_subclass_loss(x, t_aux))
    assert default == pytest.approx(by_hand, rel=1e-4, abs=1e-5)
    # ... and agrees with the reference computed with the same eps (up to the diagonal, 1/T vs d_ii).
    assert default == pytest.approx(_aux_reference(HAND_ROWS, t_aux, eps=1e-5), rel=1e-4, abs=1e-5)
    # float32 input is computed in float32, to float32 precision.
    assert val(invented_subclass_loss(x.float(), t_aux, eps=0.0)) == pytest.approx(by_hand, rel=1e-5, abs=1e-6)


def test_invented_subclass_loss_matches_reference_on_random_batches() -> None:
    g = torch.Generator().manual_seed(10)
    for b, s, scale, t_aux in [(5, 6, 1.0, 1.0), (9, 3, 10.0, 0.3), (16, 12, 0.2, 4.0)]:
        x = torch.randn(b, s, generator=g, dtype=torch.float64) * scale + 1.5
        expected = _aux_reference(x.tolist(), t_aux)
        assert val(invented_subclass_loss(x, t_aux, eps=0.0)) == pytest.approx(expected, rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("t_aux", [0.1, 1.0, 20.0])
def test_invented_subclass_loss_zero_for_identical_rows_and_single_example(t_aux: float) -> None:
    row = torch.tensor([[0.3, -1.2, 2.0, 0.0, 5.0, -0.7]], dtype=torch.float64)
    assert val(invented_subclass_loss(row.repeat(7, 1), t_aux)) == pytest.approx(0.0, abs=1e-12)
    # Identical up to a per-row shift and positive scale is identical after standardisation
    # (exactly with eps = 0; with the default eps to O(eps / var), var = 4.1 here, 0.037 for 0.1 * row).
    same = torch.cat([row, 3 * row - 2, 0.1 * row + 100])
    assert val(invented_subclass_loss(same, t_aux, eps=0.0)) == pytest.approx(0.0, abs=1e-12)
    assert val(invented_subclass_loss(same, t_aux)) == pytest.approx(0.0, abs=1e-3 / t_aux)
    # B = 1: logsumexp over one term is that term.
    assert val(invented_subclass_loss(row, t_aux)) == 0.0
    assert val(invented_subclass_loss(torch.randn(1, 6), t_aux)) == pytest.approx(0.0, abs=1e-6)


def test_invented_subclass_loss_constant_rows_are_zero_with_zero_gradient() -> None:
    # Constant rows standardise to z = 0 (eps avoids 0/0): L = log B - 0 - log B = 0, not -1/T,
    # and the gradient vanishes there.
    x = torch.tensor([[2.0] * 6, [-1.0] * 6, [0.0] * 6], requires_grad=True)
    loss = invented_subclass_loss(x)
    assert val(loss) == 0.0
    loss.backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_invented_subclass_loss_standardises_per_example_not_per_batch() -> None:
    g = torch.Generator().manual_seed(11)
    x = torch.randn(6, 5, generator=g, dtype=torch.float64)
    shift = torch.randn(6, 1, generator=g, dtype=torch.float64) * 10
    scale = torch.rand(6, 1, generator=g, dtype=torch.float64) * 20 + 0.05
    base = val(invented_subclass_loss(x, eps=0.0))
    assert val(invented_subclass_loss(x + shift, eps=0.0)) == pytest.approx(base, rel=1e-12)
    assert val(invented_subclass_loss(x * scale, eps=0.0)) == pytest.approx(base, rel=1e-12)
    assert val(invented_subclass_loss(x * scale + shift, eps=0.0)) == pytest.approx(base, rel=1e-12)
    # The default eps breaks scale invariance by O(eps / var) only (the row scales here are >= 0.05).
    assert val(invented_subclass_loss(x + shift)) == pytest.approx(val(invented_subclass_loss(x)), rel=1e-9)
    assert val(invented_subclass_loss(x * scale + shift)) == pytest.approx(base, rel=1e-2)

    # Guard: with per-batch standardisation (one mean and std over the whole batch) the same
    # per-row changes do change the value, so the test above can tell the two apart.
    def per_batch(y: torch.Tensor) -> float:
        u = (y - y.mean()) / y.std(correction=0)
        d = (u @ u.T) / y.shape[1]
        return val(torch.logsumexp(d, 1).mean() - 1.0 - math.log(len(y)))

    assert per_batch(x * scale + shift) != pytest.approx(per_batch(x), rel=1e-2)


@pytest.mark.parametrize("t_aux", [0.5, 1.0, 3.0])
def test_invented_subclass_loss_two_opposite_examples(t_aux: float) -> None:
    # u_2 = -u_1: d_12 = -1/T, so each row gives log(e^{1/T} + e^{-1/T}) - 1/T - log 2:
    #   L = log((1 + exp(-2/T)) / 2)    (T = 1: log(0.567668) = -0.566219)
    expected = math.log((1.0 + math.exp(-2.0 / t_aux)) / 2.0)
    x = torch.tensor([[0.5, -1.0, 2.0, 0.25], [0.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    x[1] = -3.0 * x[0] + 7.0  # opposite after standardisation
    assert val(invented_subclass_loss(x, t_aux, eps=0.0)) == pytest.approx(expected, rel=1e-12)
    assert val(invented_subclass_loss(x, t_aux)) == pytest.approx(expected, rel=1e-4)
    # This is the lower bound for B = 2, reached here.
    assert aux_lower_bound(2, t_aux) == pytest.approx(expected, rel=1e-12)
    if t_aux == 1.0:
        assert expected == pytest.approx(-0.566219, abs=1e-6)


@pytest.mark.parametrize("t_aux", [0.5, 1.0, 3.0])
@pytest.mark.parametrize("s", [2, 4, 7])
def test_invented_subclass_loss_lower_bound_reached_by_a_simplex(t_aux: float, s: int) -> None:
    # B = S one-hot rows standardise to a regular simplex: cos = -1/(S-1) between every pair,
    # which reaches the lower bound log((1 + (B-1) exp(-B/((B-1) T))) / B) (> -1/T).
    x = torch.eye(s, dtype=torch.float64) * 4.0 - 1.0
    bound = aux_lower_bound(s, t_aux)
    assert bound > -1.0 / t_aux
    assert val(invented_subclass_loss(x, t_aux, eps=0.0)) == pytest.approx(bound, rel=1e-12)
    # Random batches, of any size, stay above the bound for their B.
    g = torch.Generator().manual_seed(12 + s)
    for b in (2, s, 3 * s + 1):
        for _ in range(20):
            y = torch.randn(b, s, generator=g, dtype=torch.float64) * 5
            assert val(invented_subclass_loss(y, t_aux)) >= aux_lower_bound(b, t_aux) - 1e-12


def test_aux_loss_alone_spreads_examples_over_subclasses() -> None:
    # Free logits, all starting near the same vector, so every example's argmax is subclass 0.
    b, s = 32, 4
    g = torch.Generator().manual_seed(13)
    start = torch.tensor([2.0, 0.0, 0.0, 0.0]) + 0.05 * torch.randn(b, s, generator=g)
    assert set(start.argmax(1).tolist()) == {0}
    x = start.clone().requires_grad_(True)
    # Identical rows are a stationary point (the loss is flat there); Adam leaves it quickly.
    opt = torch.optim.Adam([x], lr=0.05)
    first = val(invented_subclass_loss(x))
    assert first > -0.05  # close to the 0 of identical rows
    for _ in range(300):
        opt.zero_grad()
        loss = invented_subclass_loss(x)
        loss.backward()
        opt.step()
    last = val(invented_subclass_loss(x))
    assert last < first - 0.3
    assert last >= aux_lower_bound(b, 1.0) - 1e-6
    used = torch.bincount(x.detach().argmax(1), minlength=s)
    assert (used > 0).sum() >= 2, used.tolist()
    assert used.max() <= b // 2, used.tolist()  # no subclass keeps most of the batch


def test_teacher_loss_beta_zero_is_class_cross_entropy() -> None:
    student, _, targets = _inputs(14)
    loss, parts = TeacherLoss(MEMBERSHIP, beta=0.0)(student, targets)
    ce = F.cross_entropy(class_logits(student, MEMBERSHIP), targets)
    assert val(loss) == val(ce)
    assert set(parts) == {"ce", "aux"}
    assert val(parts["ce"]) == val(ce)
    # aux is still reported, but it adds nothing to the loss or the gradient.
    assert val(parts["aux"]) == pytest.approx(val(invented_subclass_loss(student)), rel=1e-6)
    assert not parts["ce"].requires_grad and not parts["aux"].requires_grad
    loss.backward()
    ce_grad = torch.autograd.grad(F.cross_entropy(class_logits(student, MEMBERSHIP), targets), student)[0]
    torch.testing.assert_close(student.grad, ce_grad)


@pytest.mark.parametrize("beta,t_aux", [(1.0, 1.0), (0.25, 0.5), (4.0, 10.0)])
def test_teacher_loss_is_ce_plus_beta_aux(beta: float, t_aux: float) -> None:
    student, _, targets = _inputs(15)
    loss, parts = TeacherLoss(MEMBERSHIP, beta=beta, t_aux=t_aux)(student, targets)
    ce = F.cross_entropy(class_logits(student, MEMBERSHIP), targets)
    aux = invented_subclass_loss(student, t_aux)
    assert val(parts["ce"]) == pytest.approx(val(ce), rel=1e-6)
    assert val(parts["aux"]) == pytest.approx(val(aux), rel=1e-6)
    assert val(loss) == pytest.approx(val(ce) + beta * val(aux), rel=1e-6)
    # The aux term does reach the gradient.
    loss.backward()
    ce_grad = torch.autograd.grad(ce, student)[0]
    assert not torch.allclose(student.grad, ce_grad)
    # Defaults are the authors': beta = 1, T_aux = 1.
    default = TeacherLoss(MEMBERSHIP)
    assert (default.beta, default.t_aux) == (1.0, 1.0)
