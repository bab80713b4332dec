"""Movement pruning (Sanh et al. 2020): keep the weights that fine-tuning moves away from zero.

Scores S = Σ_t −w_t · ∂L/∂w_t are learned during training, so this method runs inside
``finetune_(..., prune=MovementConfig(...))`` with a gradual schedule; it has no one-shot form.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from prunekit.config import UNSTRUCTURED, PruneConfig
from prunekit.prune import scores
from prunekit.prune.methods.base import GradientScorer
from prunekit.registry import register


class MovementConfig(PruneConfig):
    """Scores learned from −w·∂L/∂w during fine-tuning (use with ``finetune_(prune=...)``)."""

    needs_data: ClassVar[bool] = True
    needs_training: ClassVar[bool] = True
    # Scores are per weight, learned step by step; no structured variant.
    patterns: ClassVar[tuple[str, ...]] = (UNSTRUCTURED, "N:M")


class MovementScorer(GradientScorer):
    def term(self, w: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        return scores.movement_term(w, grad)

    def scores(self) -> dict[str, torch.Tensor]:
        # Movement is a sum over the training steps, not a per-batch mean.
        if self.count == 0:
            raise RuntimeError("movement scores requested before any training step")
        return dict(self.total)

    def reset(self) -> None:
        """Scores keep accumulating across mask updates, as in the paper."""


register(
    "movement",
    "prune",
    MovementConfig,
    "scores −w·∂L/∂w learned while fine-tuning (gradual schedule)",
    MovementScorer,
    example={"sparsity": 0.5},
)
