"""Magnitude pruning: the weights with the smallest |w| go (Han et al. 2015)."""

from __future__ import annotations

from typing import Literal

import torch

from prunekit.config import PruneConfig
from prunekit.prune import scores
from prunekit.prune.methods.base import Scorer
from prunekit.prune.structured.scores import magnitude_groups
from prunekit.registry import register


class MagnitudeConfig(PruneConfig):
    """Remove the smallest-|w| weights; needs no data.

    norm: for structured patterns, how a unit's weights are summarised (``l1``: Σ|w|, ``l2``:
        √Σw²); unstructured pruning ranks single weights, where both orders agree.
    """

    norm: Literal["l1", "l2"] = "l1"


class MagnitudeScorer(Scorer):
    from_weight = staticmethod(scores.magnitude)

    def scores(self) -> dict[str, torch.Tensor]:
        return {n: scores.magnitude(m.weight) for n, m in self.layers.items()}


register(
    "magnitude", "prune", MagnitudeConfig, "smallest |w| removed (L1); no data", MagnitudeScorer,
    group_scores=magnitude_groups, example={"sparsity": 0.5},
)  # fmt: skip
