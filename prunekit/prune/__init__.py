"""Pruning: score (scores.py) → plan (plan.py) → apply (../surgery.py), driven by a schedule."""

from prunekit.prune.api import prune_
from prunekit.prune.methods import (
    BNScaleConfig,
    MagnitudeConfig,
    MovementConfig,
    RandomConfig,
    ReconstructionConfig,
    SparseGPTConfig,
    TaylorConfig,
    WandaConfig,
)
from prunekit.prune.report import PruneReport
from prunekit.prune.schedule import AGP, Iterative, OneShot

__all__ = [
    "AGP",
    "BNScaleConfig",
    "Iterative",
    "MagnitudeConfig",
    "MovementConfig",
    "OneShot",
    "PruneReport",
    "RandomConfig",
    "ReconstructionConfig",
    "SparseGPTConfig",
    "TaylorConfig",
    "WandaConfig",
    "prune_",
]
