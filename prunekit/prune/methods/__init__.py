"""Pruning methods, one config + one file each. Importing this package registers them."""

from prunekit.prune.methods.bn_scale import BNScaleConfig
from prunekit.prune.methods.magnitude import MagnitudeConfig
from prunekit.prune.methods.movement import MovementConfig
from prunekit.prune.methods.random import RandomConfig
from prunekit.prune.methods.reconstruction import ReconstructionConfig
from prunekit.prune.methods.sparsegpt import SparseGPTConfig
from prunekit.prune.methods.taylor import TaylorConfig
from prunekit.prune.methods.wanda import WandaConfig

__all__ = [
    "BNScaleConfig",
    "MagnitudeConfig",
    "MovementConfig",
    "RandomConfig",
    "ReconstructionConfig",
    "SparseGPTConfig",
    "TaylorConfig",
    "WandaConfig",
]
