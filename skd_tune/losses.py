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
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["DistillationLoss", "class_logits", "class_membership", "kd_loss"]


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
