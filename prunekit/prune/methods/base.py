"""What a pruning method provides: a scorer that turns weights (and observed gradients) into scores.

A scorer is created per pruning run for the selected layers. Gradient-based scorers accumulate
in :meth:`Scorer.observe`, called after each backward pass, whether in a calibration pass
(one-shot) or in the training loop (gradual pruning), so one scorer serves every schedule.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch
from torch import nn

from prunekit.config import PruneConfig


class Scorer:
    """Base scorer, stateless. Subclasses override :meth:`scores`.

    ``normalize_globally``: the raw scores of different layers are not on one scale (gradient
    terms are), so a global ranking first L2-normalises each layer's scores.
    ``from_weight``: ``w → scores`` for any block of a weight's rows, when the scores need
    nothing else (:meth:`scores` must agree with it).
    """

    normalize_globally: bool = False
    # Set where a layer's scores are an elementwise function of its weight alone (|w|): the
    # pruner then scores a part of a weight at a time instead of holding every layer's scores.
    from_weight: ClassVar[Callable[[torch.Tensor], torch.Tensor] | None] = None

    def __init__(self, config: PruneConfig, layers: dict[str, nn.Module]) -> None:
        self.config = config
        self.layers = layers

    def observe(self) -> None:
        """Called after a backward pass while gradients are in ``weight.grad``."""

    def scores(self) -> dict[str, torch.Tensor]:
        """``{layer name: scores of its weight's shape}``; higher is more important."""
        raise NotImplementedError


class GradientScorer(Scorer):
    """Accumulates a per-batch term of (w, ∂L/∂w) over observed batches."""

    normalize_globally = True

    def __init__(self, config: PruneConfig, layers: dict[str, nn.Module]) -> None:
        super().__init__(config, layers)
        self.total = {n: torch.zeros_like(m.weight, dtype=torch.float32) for n, m in layers.items()}
        self.count = 0

    def term(self, w: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def observe(self) -> None:
        for name, module in self.layers.items():
            grad = module.weight.grad
            if grad is not None:
                self.total[name] += self.term(module.weight, grad).float()
        self.count += 1

    @property
    def has_observations(self) -> bool:
        return self.count > 0

    def scores(self) -> dict[str, torch.Tensor]:
        if self.count == 0:
            raise RuntimeError("gradient scores requested before any batch was observed")
        return {n: t / self.count for n, t in self.total.items()}

    def reset(self) -> None:
        for t in self.total.values():
            t.zero_()
        self.count = 0


class CalibrationSolver:
    """A one-shot method that reads each layer's inputs on calibration data (Wanda, SparseGPT).

    Per layer: :meth:`new_stats` → :meth:`accumulate` on every batch of inputs (rows ``[N, K]``)
    → :meth:`solve`, which returns the new weight matrix ``[out, K]`` with the removed entries
    at exactly zero.
    """

    def __init__(self, config: PruneConfig) -> None:
        self.config = config

    def new_stats(self, k: int) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def accumulate(self, stats: dict[str, torch.Tensor], rows: torch.Tensor) -> None:
        raise NotImplementedError

    def solve(
        self, w: torch.Tensor, stats: dict[str, torch.Tensor], sparsity: float
    ) -> torch.Tensor:
        raise NotImplementedError
