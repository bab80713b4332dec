"""BatchNorm-scale pruning (network slimming, Liu et al. 2017): channels whose BatchNorm γ is
smallest go. Structured only: γ scales a whole channel, it says nothing about single weights."""

from __future__ import annotations

from typing import ClassVar

from prunekit.config import PruneConfig
from prunekit.prune.structured.scores import bn_scale_groups
from prunekit.registry import register


class BNScaleConfig(PruneConfig):
    """Remove the channels with the smallest |γ| of their BatchNorm; needs no data."""

    pattern: str = "channel"

    # γ scales a channel; it says nothing about single weights or attention heads.
    patterns: ClassVar[tuple[str, ...]] = ("channel",)


register(
    "bn-scale", "prune", BNScaleConfig, "channels with the smallest BatchNorm |γ| (structured)",
    bn_scale_groups, group_scores=bn_scale_groups, example={"sparsity": 0.5},
)  # fmt: skip
