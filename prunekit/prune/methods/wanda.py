"""Wanda (Sun et al. 2023): score |W_ij|·‖X_j‖₂, compare within each output row, no update.

The input norms come from the calibration pass; no weight is changed except the zeros written.
"""

from __future__ import annotations

from typing import Literal

import torch

from prunekit.config import NM
from prunekit.prune.methods.base import CalibrationSolver
from prunekit.prune.methods.calibrated import CalibratedConfig
from prunekit.prune.plan import nm_mask, row_masks, unstructured_mask
from prunekit.prune.refine import refine_mask
from prunekit.registry import register


class WandaConfig(CalibratedConfig):
    """|W|·‖X‖ from calibration inputs. ``comparison``: ``row`` (per output, as in the paper)
    or ``layer`` (one ranking per layer)."""

    comparison: Literal["row", "layer"] = "row"


def wanda_scores(w: torch.Tensor, sq_norms: torch.Tensor) -> torch.Tensor:
    """w: [out, K], sq_norms: [K] = Σ_n x_nj² → |W_ij| · ‖X_j‖₂, [out, K]."""
    return w.abs() * sq_norms.sqrt().unsqueeze(0)


def wanda_mask(
    w: torch.Tensor, sq_norms: torch.Tensor, sparsity: float, nm: NM | None, comparison: str
) -> torch.Tensor:
    """Keep-mask [out, K]: N:M groups, or the lowest scores per row (or per layer) removed."""
    scores = wanda_scores(w, sq_norms)
    if nm is not None:
        return nm_mask(scores, nm)
    if comparison == "row":
        return row_masks(scores, sparsity)
    return unstructured_mask(scores, sparsity)


class WandaSolver(CalibrationSolver):
    def new_stats(self, k: int) -> dict[str, torch.Tensor]:
        stats = {"sq": torch.zeros(k, dtype=torch.float64)}
        if self.config.refine:  # the refinement's error model: the inputs' second moment
            stats["xtx"] = torch.zeros(k, k, dtype=torch.float64)
            stats["n"] = torch.zeros((), dtype=torch.long)
        return stats

    def accumulate(self, stats: dict[str, torch.Tensor], rows: torch.Tensor) -> None:
        r = rows.double()
        stats["sq"] += r.pow(2).sum(dim=0)
        if "xtx" in stats:
            stats["xtx"].addmm_(r.t(), r)
            stats["n"] += r.shape[0]

    def solve(
        self, w: torch.Tensor, stats: dict[str, torch.Tensor], sparsity: float
    ) -> torch.Tensor:
        c = self.config
        keep = wanda_mask(w.float(), stats["sq"].float(), sparsity, c.nm, c.comparison)
        if c.refine:
            gram = stats["xtx"] / max(int(stats["n"]), 1)
            _, keep, _ = refine_mask(w, w.masked_fill(~keep, 0.0), keep, gram, c.nm,
                                     c.refine_iterations)  # fmt: skip
        return w.masked_fill(~keep, 0.0)


register(
    "wanda",
    "prune",
    WandaConfig,
    "|W|·‖X‖ per output row from calibration data; one shot",
    WandaSolver,
    example={"sparsity": 0.5, "num_samples": 32},
)
