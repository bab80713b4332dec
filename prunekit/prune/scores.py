"""Importance scores: pure tensor functions (higher score = more important = kept).

Each takes tensors and returns a tensor of the weight's shape. No module is touched here.
"""

from __future__ import annotations

import torch


def magnitude(w: torch.Tensor) -> torch.Tensor:
    """|w| (L1 magnitude). w: any shape → same shape."""
    return w.detach().abs()


def random_scores(shape: torch.Size, generator: torch.Generator) -> torch.Tensor:
    """Uniform random scores, the baseline every criterion must beat."""
    return torch.rand(shape, generator=generator)


def taylor_term(w: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """|w · ∂L/∂w| for one batch: the first-order Taylor estimate of the loss change when w → 0."""
    return (w.detach() * grad.detach()).abs()


def movement_term(w: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """-w · ∂L/∂w for one step (Sanh et al. 2020): positive when training pushes w away from 0."""
    return -(w.detach() * grad.detach())
