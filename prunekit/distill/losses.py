"""Distillation losses: pure functions of student and teacher tensors."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["distillation_loss", "mean_pool", "output_loss", "real_positions", "row_loss"]


def distillation_loss(
    student: torch.Tensor, teacher: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Hinton et al. (2015): KL(teacher_T ‖ student_T) · T², so gradients keep their scale as T
    grows. student, teacher: logits [B, C] or [B, T, C]."""
    s = F.log_softmax(student.reshape(-1, student.shape[-1]) / temperature, dim=-1)
    t = F.log_softmax(teacher.reshape(-1, teacher.shape[-1]) / temperature, dim=-1)
    return F.kl_div(s, t, log_target=True, reduction="batchmean") * temperature**2


def real_positions(x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``x`` as rows ``[N, W]`` to compare: token states ``[B, T, W]`` keep the positions where
    ``mask [B, T]`` is true (all without a mask); feature maps ``[B, C, H, W]`` give one row per
    pixel ``[B·H·W, C]``; ``[B, W]`` is returned as is; other shapes are flattened per sample.
    """
    if x.dim() == 3:
        rows = x.reshape(-1, x.shape[-1])
        if mask is not None and tuple(mask.shape) == tuple(x.shape[:2]):
            rows = rows[mask.reshape(-1).bool()]
        return rows
    if x.dim() == 4:
        return x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])
    if x.dim() == 2:
        return x
    return x.reshape(x.shape[0], -1)


def row_loss(student: torch.Tensor, teacher: torch.Tensor, kind: str) -> torch.Tensor:
    """Between rows ``[N, W]``: mean squared error (``"mse"``), the same divided by the
    teacher's mean square (``"normalized-mse"``: every layer weighs alike whatever the scale of
    its states, as SquareHead does, Kurtic et al. 2023) or mean 1 − cos (``"cosine"``, blind to
    each row's scale)."""
    if kind == "mse":
        return F.mse_loss(student, teacher)
    if kind == "normalized-mse":
        scale = teacher.detach().float().pow(2).mean().clamp_min(torch.finfo(torch.float32).tiny)
        return F.mse_loss(student, teacher) / scale
    if kind == "cosine":
        return (1.0 - F.cosine_similarity(student, teacher, dim=-1)).mean()
    raise ValueError(f"loss kind must be 'mse', 'normalized-mse' or 'cosine'; got {kind!r}")


def mean_pool(states: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Sentence embeddings ``[B, H]``: token states ``[B, T, H]`` averaged over the real tokens
    of ``mask [B, T]`` (all tokens without one), as sentence-transformers pools."""
    if mask is None:
        return states.mean(dim=1)
    weights = mask.unsqueeze(-1).to(states.dtype)
    return (states * weights).sum(1) / weights.sum(1).clamp(min=1e-9)


def output_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    kind: str,
    temperature: float,
    mask: torch.Tensor | None = None,
    pool: bool = False,
) -> torch.Tensor:
    """The output-matching term. ``"kl"``: soft-target KL·T² on logits ``[B, C]``/``[B, T, C]``
    (every position). ``"mse"``/``"cosine"``: :func:`row_loss` on the outputs' rows, or with
    ``pool`` (an encoder's token states ``[B, T, H]``) on their mean-pooled sentence embeddings.
    """
    if kind == "kl":
        return distillation_loss(student, teacher, temperature)
    if pool:
        return row_loss(mean_pool(student, mask), mean_pool(teacher, mask), kind)
    return row_loss(real_positions(student, mask), real_positions(teacher, mask), kind)
