"""Accuracy-budget auto-compression: search per-layer sparsity and quantization with Optuna."""

from prunekit.auto.config import AutoConfig
from prunekit.auto.plot import plot_frontier
from prunekit.auto.report import AutoReport, Final, TrialRecord, pareto_front
from prunekit.auto.search import accuracy_profile, auto_compress
from prunekit.auto.space import Choice, Space, build_space
from prunekit.auto.split import validation_split

__all__ = [
    "AutoConfig",
    "AutoReport",
    "Choice",
    "Final",
    "Space",
    "TrialRecord",
    "accuracy_profile",
    "auto_compress",
    "build_space",
    "pareto_front",
    "plot_frontier",
    "validation_split",
]
