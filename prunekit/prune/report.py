"""What a pruning call did, per layer: a small report, readable and JSON-ready."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from prunekit.report import Report, Table, shape


@dataclass(frozen=True)
class LayerSparsity:
    name: str
    kind: str
    shape: tuple[int, ...]
    numel: int
    zeros: int

    computed: ClassVar[tuple[str, ...]] = ("sparsity",)

    @property
    def sparsity(self) -> float:
        return self.zeros / self.numel if self.numel else 0.0


@dataclass(kw_only=True)
class PruneReport(Report):
    """Per-layer sparsity of the pruned layers, and the totals over them.

    sparsity: the fraction of zeros over the pruned layers' weights (``per_layer``: each
    layer's). applied: False for a dry run (``prune_(..., dry_run=True)``): the figures are
    what the call would reach; the model was not changed.
    """

    layers: list[LayerSparsity]
    applied: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    computed = ("sparsity", "zeros", "numel")

    @classmethod
    def from_layers(
        cls, method: str, config: dict[str, Any], layers: dict[str, nn.Module], seconds: float
    ) -> PruneReport:
        rows = [
            LayerSparsity(
                name=n,
                kind=type(m).__name__,
                shape=tuple(m.weight.shape),
                numel=m.weight.numel(),
                # count_nonzero: summing a bool tensor first copies it to int64 (8 bytes each)
                zeros=m.weight.numel() - int(torch.count_nonzero(m.weight.detach())),
            )
            for n, m in layers.items()
        ]
        return cls(method=method, config=config, layers=rows, seconds=seconds)

    @property
    def numel(self) -> int:
        return sum(r.numel for r in self.layers)

    @property
    def zeros(self) -> int:
        return sum(r.zeros for r in self.layers)

    @property
    def sparsity(self) -> float:
        """Fraction of zeros over all pruned layers' weights."""
        return self.zeros / self.numel if self.numel else 0.0

    @property
    def per_layer(self) -> dict[str, float]:
        return {r.name: r.sparsity for r in self.layers}

    def title(self) -> str:
        what = f"{self.sparsity:.2%} of {self.numel:,} weights"
        if not self.applied:
            return f"{self.method} (dry run): {what} would be removed"
        return f"{self.method}: {what} removed"

    def table(self) -> Table:
        rows = [[r.name, r.kind, shape(r.shape), f"{r.numel:,}", f"{r.sparsity:.2%}"]
                for r in self.layers]  # fmt: skip
        rows.append(["total", "", "", f"{self.numel:,}", f"{self.sparsity:.2%}"])
        return ["layer", "type", "shape", "weights", "sparsity"], rows
