"""What a pruning call did, per layer: a small report, readable and JSON-ready."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from torch import nn


@dataclass(frozen=True)
class LayerSparsity:
    name: str
    kind: str
    shape: tuple[int, ...]
    numel: int
    zeros: int

    @property
    def sparsity(self) -> float:
        return self.zeros / self.numel if self.numel else 0.0


@dataclass
class PruneReport:
    """Per-layer sparsity of the pruned layers, and the totals over them."""

    method: str
    config: dict[str, Any]
    layers: list[LayerSparsity]
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

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
                zeros=int((m.weight.detach() == 0).sum()),
            )
            for n, m in layers.items()
        ]
        return cls(method, config, rows, seconds)

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

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "config": self.config,
            "sparsity": self.sparsity,
            "zeros": self.zeros,
            "numel": self.numel,
            "seconds": self.seconds,
            "layers": [{**asdict(r), "sparsity": r.sparsity} for r in self.layers],
            **self.extra,
        }

    def __str__(self) -> str:
        from prunekit.measure.render import render_table

        rows = [
            [r.name, r.kind, "×".join(map(str, r.shape)), f"{r.numel:,}", f"{r.sparsity:.2%}"]
            for r in self.layers
        ]
        rows.append(["total", "", "", f"{self.numel:,}", f"{self.sparsity:.2%}"])
        return render_table(
            f"{self.method}: {self.sparsity:.2%} of {self.numel:,} weights removed",
            ["layer", "type", "shape", "weights", "sparsity"],
            rows,
        )
