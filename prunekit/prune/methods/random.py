"""Random pruning: the baseline every criterion has to beat."""

from __future__ import annotations

import torch

from prunekit.config import PruneConfig
from prunekit.prune import scores
from prunekit.prune.methods.base import Scorer
from prunekit.prune.structured.scores import random_groups
from prunekit.registry import register


class RandomConfig(PruneConfig):
    """Remove weights uniformly at random (deterministic under ``seed``)."""


class RandomScorer(Scorer):
    def scores(self) -> dict[str, torch.Tensor]:
        gen = torch.Generator().manual_seed(self.config.seed)
        return {n: scores.random_scores(m.weight.shape, gen) for n, m in self.layers.items()}


register(
    "random", "prune", RandomConfig, "uniformly random weights removed; a baseline", RandomScorer,
    group_scores=random_groups, example={"sparsity": 0.5},
)  # fmt: skip
