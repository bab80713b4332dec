"""First-order Taylor pruning: remove the weights whose removal changes the loss least.

Score = mean over batches of |w · ∂L_b/∂w| (Molchanov et al. 2016/2019). The absolute value is
taken per batch before averaging: at a trained minimum the full-data gradient is near zero, so
|w · mean(g)| would be mostly noise, while the per-batch magnitude keeps the signal.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field

from prunekit.config import PruneConfig
from prunekit.prune import scores
from prunekit.prune.methods.base import GradientScorer
from prunekit.prune.structured.scores import taylor_groups
from prunekit.registry import register


class TaylorConfig(PruneConfig):
    """|w · ∂L/∂w| accumulated over ``num_samples`` samples of labelled data."""

    num_samples: int = Field(1024, ge=1)

    needs_data: ClassVar[bool] = True


class TaylorScorer(GradientScorer):
    def term(self, w: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        return scores.taylor_term(w, grad)


register(
    "taylor", "prune", TaylorConfig, "first-order Taylor |w·∂L/∂w| over data batches",
    TaylorScorer, group_scores=taylor_groups, example={"sparsity": 0.5, "num_samples": 64},
)  # fmt: skip
