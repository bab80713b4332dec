"""Training losses (pure functions of logits and targets)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from prunekit.errors import PrunekitError


def task_loss(logits: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    """Cross-entropy. logits: [B, C] or [B, T, C]; labels: [B] or [B, T] (-100 ignored)."""
    if labels is None:
        raise PrunekitError(
            "data: this step needs labels; pass (inputs, labels) batches, dicts with 'labels', "
            "or a loss_fn(outputs, labels)"
        )
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))


def distillation_loss(
    student: torch.Tensor, teacher: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Hinton et al. (2015): KL(teacher_T ‖ student_T) · T², so gradients keep their scale as T
    grows. student, teacher: logits [B, C] or [B, T, C]."""
    s = F.log_softmax(student.reshape(-1, student.shape[-1]) / temperature, dim=-1)
    t = F.log_softmax(teacher.reshape(-1, teacher.shape[-1]) / temperature, dim=-1)
    return F.kl_div(s, t, log_target=True, reduction="batchmean") * temperature**2
