"""Will one-shot pruning fit in memory? An estimate of one block's working set, checked before
the model is touched (see :mod:`prunekit.memory`)."""

from __future__ import annotations

from typing import Any

from torch import nn

from prunekit.layout import as_matrix
from prunekit.memory import Need, block_need, calibration_tokens, check_fits
from prunekit.prune.methods.base import CalibrationSolver


def keeps_hessian(solver: CalibrationSolver) -> bool:
    """Whether ``solver`` keeps a [K, K] statistic per layer (SparseGPT) rather than a [K] one."""
    return max(t.numel() for t in solver.new_stats(2).values()) == 4


def calibrated_need(
    solver: CalibrationSolver, blocks: list[dict[str, nn.Module]], data: list[Any]
) -> Need:
    """The largest working set among ``blocks`` (each: its target layers by name) for
    calibration ``data``."""
    hessian = keeps_hessian(solver)
    tokens = calibration_tokens(data)
    needs = []
    for layers in blocks:
        weights = [as_matrix(m, m.weight) for m in layers.values()]
        first = weights[0]
        shapes = [tuple(w.shape) for w in weights]
        needs.append(block_need(shapes, hessian, tokens, first.shape[1], first.element_size()))
    return max(needs, key=lambda n: n.total)


def check_calibrated_fits(
    solver: CalibrationSolver, blocks: list[dict[str, nn.Module]], data: list[Any], name: str
) -> None:
    """A PrunekitError saying what to change when pruning would not fit in memory."""
    check_fits(calibrated_need(solver, blocks, data), f"{name} (one block at a time)")
