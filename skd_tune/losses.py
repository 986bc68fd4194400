"""Losses of subclass knowledge distillation: pure tensor maths, no Ray, no training loop.

Notation: a batch of B samples, C classes, S subclasses; `subclass_to_class` is a (S,) long tensor
giving the class of each subclass. Every model outputs *subclass* logits z of shape (B, S).

- Class logits from subclass logits: the class probability is the sum of its subclasses'
  probabilities, p(c) = sum_{s in c} softmax(z)_s, which is softmax over the class logits
  z_c = logsumexp_{s in c} z_s (`class_logits`).
- KD (Hinton, Vinyals, Dean 2015, "Distilling the Knowledge in a Neural Network"):
  T^2 * KL(softmax(t / T) || softmax(s / T)) on class logits (`kd_loss`).
- SKD (Müller, Kornblith, Hinton 2020, "Subclass Distillation"; Sajedi et al. 2022, "Subclass
  Knowledge Distillation with Known Subclass Labels"): the same KL on subclass logits.
- Total student loss: L = w_ce * CE(class) + w_kd * KD_class + w_skd * KD_subclass
  (`DistillationLoss`); no-KD is w_kd = w_skd = 0, conventional KD is w_skd = 0.
- Invented subclasses (Müller et al. 2020, no subclass labels): the teacher's objective is
  CE(class) + beta * L_aux (`TeacherLoss`), where the contrastive L_aux spreads the examples of a
  batch over the subclasses (`invented_subclass_loss`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = [
    "DistillationLoss",
    "TeacherLoss",
    "class_logits",
    "class_membership",
    "invented_subclass_loss",
    "kd_loss",
]


def class_membership(subclass_to_class: torch.Tensor, num_classes: int | None = None) -> torch.Tensor:
    """(C, S) bool mask, True where subclass s belongs to class c."""
    subclass_to_class = torch.as_tensor(subclass_to_class, dtype=torch.long)
    if num_classes is None:
        num_classes = int(subclass_to_class.max()) + 1
    classes = torch.arange(num_classes, device=subclass_to_class.device)
    return classes[:, None] == subclass_to_class[None, :]


def class_logits(subclass_logits: torch.Tensor, membership: torch.Tensor) -> torch.Tensor:
    """Class logits from subclass logits: z_c = logsumexp_{s in c} z_s.

    Args:
        subclass_logits: (B, S) float.
        membership: (C, S) bool from `class_membership`.
    Returns:
        (B, C) logits with softmax(z_c) = sum_{s in c} softmax(z_s) exactly (no reduction over B).
    """
    neg_inf = torch.finfo(subclass_logits.dtype).min
    masked = subclass_logits[:, None, :].masked_fill(~membership.to(subclass_logits.device)[None], neg_inf)
    return torch.logsumexp(masked, dim=-1)


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Knowledge-distillation loss of Hinton et al. (2015).

        KD = T^2 * (1/B) * sum_b KL( softmax(t_b / T) || softmax(s_b / T) )

    The T^2 factor keeps the gradient scale independent of T. Applied to class logits it is
    conventional KD; applied to subclass logits it is SKD.

    Args:
        student_logits: (B, K) float, K classes or subclasses.
        teacher_logits: (B, K) float; treated as constant (no gradient flows into it).
        temperature: T > 0.
    Returns:
        Scalar, mean over the batch ("batchmean"); 0 iff the two distributions agree on every row.
    """
    t = float(temperature)
    log_p_s = F.log_softmax(student_logits.float() / t, dim=-1)
    log_p_t = F.log_softmax(teacher_logits.detach().float() / t, dim=-1)
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * (t * t)


def invented_subclass_loss(subclass_logits: torch.Tensor, t_aux: float = 1.0, eps: float = 1e-5) -> torch.Tensor:
    """Auxiliary loss of Müller, Kornblith & Hinton (2020), "Subclass Distillation", for invented subclasses.

    Each example's S subclass logits are standardised over its own S entries (per example, not per
    batch) and scaled so that z_i . z_i = 1/T_aux:

        u_i = (x_i - mean_s x_is) / sqrt(var_s x_is + eps)   (population variance over the S entries)
        z_i = u_i / sqrt(T_aux * S)
        d_ij = z_i . z_j = cos(x_i - mean, x_j - mean) / T_aux     (for non-constant rows, eps -> 0)

        L_aux = (1/B) sum_i [ logsumexp_j d_ij - d_ii ] - log B        (j runs over the batch, j = i included)

    i.e. the cross-entropy of "which example of the batch am I" from the dot products, shifted by
    log B. Since d_ii = 1/T_aux up to eps, this is mean_i logsumexp_j d_ij - 1/T_aux - log B; using
    d_ii rather than the constant keeps the identities below exact whatever eps, and gives 0, not
    -1/T_aux, for constant rows (z_i = 0: such an example carries no subclass information).
    Minimising it pushes the examples of a batch apart, i.e. onto different subclasses.

    Limiting cases (exact for eps = 0; with eps > 0 up to O(eps / var_s x_is)):
    - identical rows, constant rows (exactly 0 whatever eps), or B = 1: L_aux = 0;
    - invariant to adding a per-row constant (exactly) and to scaling a row by a positive number;
    - two examples with opposite standardised vectors (d_12 = -1/T_aux): log((1 + exp(-2/T_aux)) / 2);
    - lower bound, for any B >= 2 and any eps >= 0 (d_ii <= 1/T_aux):

          L_aux >= log( (1 + (B-1) * exp(-B / ((B-1) * T_aux))) / B )   > -1/T_aux.

      Proof: with m_i = mean_{j != i} (d_ij - d_ii), Jensen gives row i's term >= g(m_i), where
      g(m) = log(1 + (B-1) e^m) - log B is convex and increasing, so L_aux >= g(mean_i m_i); and
      mean_i m_i = (|sum_i z_i|^2 - B sum_i d_ii) / (B (B-1)) >= -B / ((B-1) T_aux).
      It is attained (eps -> 0) iff the standardised rows form a regular simplex, all
      d_ij = -1/((B-1) T_aux) and sum_i z_i = 0, which is possible iff B <= S (e.g. the B = S
      one-hot rows); for B > S it is a strict bound. B = 2 gives the opposite-vectors value.

    Args:
        subclass_logits: (B, S) float, the teacher's subclass logits (S >= 2).
        t_aux: T_aux > 0; the authors' code uses 1.
        eps: added to the per-example variance, so a constant row gives z_i = 0 and finite gradients.
    Returns:
        Scalar, mean over the batch of the per-example terms, computed in float32 (float64 kept).
    """
    x = subclass_logits if subclass_logits.dtype == torch.float64 else subclass_logits.float()
    if x.dim() != 2:
        raise ValueError(f"subclass_logits must be (B, S), got shape {tuple(x.shape)}")
    b, s = x.shape
    if b == 0:
        raise ValueError("invented_subclass_loss needs a non-empty batch")
    centred = x - x.mean(dim=1, keepdim=True)
    var = centred.pow(2).mean(dim=1, keepdim=True)
    z = centred / torch.sqrt(var + eps) / math.sqrt(float(t_aux) * s)
    d = z @ z.T  # (B, B)
    per_example = torch.logsumexp(d, dim=1) - torch.diagonal(d)
    return per_example.mean() - math.log(b)


@dataclass
class DistillationLoss:
    """The student objective L = w_ce * CE(class) + w_kd * KD_class + w_skd * KD_subclass.

    - CE(class): cross-entropy of the student's class logits (logsumexp of its subclass logits)
      against the hard class labels, mean over the batch.
    - KD_class: `kd_loss` on class logits of student and teacher (Hinton et al. 2015).
    - KD_subclass: `kd_loss` on the subclass logits (SKD; Müller et al. 2020, Sajedi et al. 2022).

    Call with student subclass logits (B, S), teacher subclass logits (B, S) or None (no-KD, requires
    w_kd = w_skd = 0), and class targets (B,). Returns the scalar loss and its parts as detached
    tensors (summed by the loop and read once per epoch, so a GPU is not synchronised per batch).
    """

    membership: torch.Tensor  # (C, S) bool
    temperature: float = 4.0
    w_ce: float = 1.0
    w_kd: float = 0.0
    w_skd: float = 1.0

    def __call__(
        self, student: torch.Tensor, teacher: torch.Tensor | None, targets: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        s_class = class_logits(student, self.membership)
        loss = student.new_zeros((), dtype=torch.float32)
        parts: dict[str, torch.Tensor] = {}
        if self.w_ce > 0:
            ce = F.cross_entropy(s_class.float(), targets)
            loss = loss + self.w_ce * ce
            parts["ce"] = ce.detach()
        if self.w_kd > 0 or self.w_skd > 0:
            if teacher is None:
                raise ValueError("w_kd or w_skd > 0 needs the teacher's subclass logits, got None")
            if self.w_kd > 0:
                kd = kd_loss(s_class, class_logits(teacher, self.membership), self.temperature)
                loss = loss + self.w_kd * kd
                parts["kd"] = kd.detach()
            if self.w_skd > 0:
                skd = kd_loss(student, teacher, self.temperature)
                loss = loss + self.w_skd * skd
                parts["skd"] = skd.detach()
        return loss, parts


@dataclass
class TeacherLoss:
    """The objective of a teacher that invents its subclasses: L = CE(class) + beta * L_aux.

    - CE(class): cross-entropy of the class logits (logsumexp of the subclass logits, `class_logits`)
      against the hard class labels, mean over the batch.
    - L_aux: `invented_subclass_loss` of the subclass logits at temperature t_aux (Müller et al. 2020;
      their code uses beta = 1, t_aux = 1). beta = 0 is a plain class-CE teacher.

    Call with subclass logits (B, S) and class targets (B,). Returns the scalar loss and its parts as
    detached tensors, "ce" and "aux" (aux is reported even when beta = 0, but then not added).
    """

    membership: torch.Tensor  # (C, S) bool
    beta: float = 1.0
    t_aux: float = 1.0

    def __call__(
        self, subclass_logits: torch.Tensor, class_target: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        ce = F.cross_entropy(class_logits(subclass_logits, self.membership).float(), class_target)
        if self.beta != 0:
            aux = invented_subclass_loss(subclass_logits, self.t_aux)
            loss = ce + self.beta * aux
        else:
            with torch.no_grad():
                aux = invented_subclass_loss(subclass_logits, self.t_aux)
            loss = ce
        return loss, {"ce": ce.detach(), "aux": aux.detach()}
