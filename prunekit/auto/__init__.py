"""Accuracy-budget auto-compression: search per-layer sparsity and quantization with Optuna;
size-budget bits per layer (``search_bits``)."""

from prunekit.auto.bits import (
    BitsProfile,
    BitsReport,
    BitsSearchConfig,
    bits_profile,
    search_bits,
)
from prunekit.auto.config import AutoConfig
from prunekit.auto.plot import plot_frontier
from prunekit.auto.report import AutoReport, Final, TrialRecord, pareto_front
from prunekit.auto.search import accuracy_profile, auto_compress
from prunekit.auto.space import Choice, Space, build_space
from prunekit.auto.split import validation_split

__all__ = [
    "AutoConfig",
    "AutoReport",
    "BitsProfile",
    "BitsReport",
    "BitsSearchConfig",
    "Choice",
    "Final",
    "Space",
    "TrialRecord",
    "accuracy_profile",
    "auto_compress",
    "bits_profile",
    "build_space",
    "pareto_front",
    "plot_frontier",
    "search_bits",
    "validation_split",
]
