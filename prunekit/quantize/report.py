"""What a quantization call did, per layer: a small report, readable and JSON-ready."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

from torch import nn

from prunekit.layout import canonical
from prunekit.quantize.grid import sqnr_db
from prunekit.report import Report, Table, shape


@dataclass(frozen=True)
class LayerQuant:
    """One quantized layer (or static-int8 region).

    bits: bits per stored weight. sqnr_db: 10·log10(‖W‖²/‖W−Ŵ‖²) of its weight (of its output on
    the first calibration batch for a static region). bytes_before/bytes_after: the layer's
    stored state (weights, scales, bias) before and after.
    """

    name: str
    kind: str
    shape: tuple[int, ...]
    bits: int
    group_size: int | None
    sqnr_db: float
    bytes_before: int
    bytes_after: int

    def to_dict(self) -> dict[str, Any]:
        # JSON has no infinity: an exact layer (e.g. all zeros) reports None.
        row = {f.name: getattr(self, f.name) for f in fields(self)}
        finite = math.isfinite(self.sqnr_db)
        return {**row, "shape": list(self.shape), "sqnr_db": self.sqnr_db if finite else None}


@dataclass(kw_only=True)
class QuantizeReport(Report):
    """Layers quantized, layers skipped and why, and the time it took."""

    layers: list[LayerQuant]
    extra: dict[str, Any] = field(default_factory=dict)

    computed = ("bytes_before", "bytes_after")

    @property
    def bytes_before(self) -> int:
        return sum(r.bytes_before for r in self.layers)

    @property
    def bytes_after(self) -> int:
        return sum(r.bytes_after for r in self.layers)

    @property
    def min_sqnr_db(self) -> float:
        return min((r.sqnr_db for r in self.layers), default=math.inf)

    def title(self) -> str:
        before, after = self.bytes_before, self.bytes_after
        ratio = f"{before / after:.2f}×" if after else "n/a"
        return (
            f"{self.method}: {len(self.layers)} modules quantized, {before:,} → {after:,} bytes "
            f"({ratio} smaller), {self.seconds:.2f} s"
        )

    def table(self) -> Table:
        rows = [[r.name, r.kind, shape(r.shape), str(r.bits),
                 "-" if r.group_size is None else str(r.group_size), f"{r.sqnr_db:.1f}",
                 f"{r.bytes_before:,}", f"{r.bytes_after:,}"] for r in self.layers]  # fmt: skip
        return ["layer", "type", "shape", "bits", "group", "SQNR dB", "bytes", "bytes after"], rows


def state_bytes(module: nn.Module) -> int:
    """Bytes of a module's own parameters and buffers (what an artifact stores for it)."""
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())


def layer_row(
    name: str, old: nn.Module, new: nn.Module, bits: int, group_size: int | None
) -> LayerQuant:
    """One report row: weight SQNR of ``new`` against ``old`` and their stored bytes."""
    w = canonical(old, old.weight.detach()).float()
    return LayerQuant(
        name=name,
        kind=type(old).__name__,
        shape=tuple(w.shape),
        bits=bits,
        group_size=group_size,
        sqnr_db=sqnr_db(w, new.weight.detach()),
        bytes_before=state_bytes(old),
        bytes_after=state_bytes(new),
    )
