"""Analysis: per-layer sensitivity sweeps, their plots, size-vs-accuracy (Pareto) plots, and
running independent trials in parallel (Ray, or in-process)."""

from prunekit.analyze.parallel import map_trials
from prunekit.analyze.plots import ParetoPoint, plot_pareto, plot_sensitivity
from prunekit.analyze.profile import SensitivityProfile, SensitivityRow
from prunekit.analyze.sensitivity import DEFAULT_RATIOS, analyze_sensitivity

__all__ = [
    "DEFAULT_RATIOS",
    "ParetoPoint",
    "SensitivityProfile",
    "SensitivityRow",
    "analyze_sensitivity",
    "map_trials",
    "plot_pareto",
    "plot_sensitivity",
]
