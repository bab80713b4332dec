"""BatchNorm-scale pruning (network slimming, Liu et al. 2017): channels whose BatchNorm γ is
smallest go. Structured only: γ scales a whole channel, it says nothing about single weights."""

from __future__ import annotations

from pydantic import field_validator

from prunekit.config import STRUCTURED_PATTERNS, PruneConfig
from prunekit.prune.methods.base import Scorer
from prunekit.registry import register


class BNScaleConfig(PruneConfig):
    """Remove the channels with the smallest |γ| of their BatchNorm; needs no data."""

    pattern: str = "channel"

    @field_validator("pattern")
    @classmethod
    def _structured_only(cls, v: str) -> str:
        if v not in STRUCTURED_PATTERNS:
            raise ValueError(
                f"bn-scale ranks whole channels by their BatchNorm scale; pattern must be "
                f"'channel'; got {v!r}"
            )
        return v


register(
    "bn-scale", "prune", BNScaleConfig, "channels with the smallest BatchNorm |γ| (structured)",
    Scorer,
)  # fmt: skip
