"""The search space, bounded by a sensitivity profile, and one trial's choices.

Pure: a profile and a config in, per-layer sparsity ranges out; an Optuna trial in, a
:class:`Choice` out. Nothing here touches a model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prunekit.auto.config import AutoConfig

MAX_SPARSITY = 0.98
# What makes the artifact smaller (k-means codebooks: at 8 bits nearly lossless and 4× below
# fp32 per kept weight, so "none" would only waste trials) or the forward pass faster (int8
# kernels; unstructured zeros do not speed up dense CPU kernels).
QUANT_CHOICES = {"size": ("kmeans",), "latency": ("none", "int8-dynamic")}


@dataclass(frozen=True)
class Choice:
    """One configuration: per-layer sparsity, then optional sharing or quantization."""

    layer_sparsity: dict[str, float]
    quant: str = "none"
    bits: int | None = None
    conv_bits: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "layer_sparsity": dict(self.layer_sparsity),
            "quant": self.quant,
            "bits": self.bits,
            "conv_bits": self.conv_bits,
        }

    def label(self) -> str:
        sparsity = " ".join(f"{s:.2f}" for s in self.layer_sparsity.values())
        if self.quant == "kmeans":
            bits = f"{self.bits}" + (f"/{self.conv_bits}" if self.conv_bits else "")
            return f"[{sparsity}] kmeans {bits} bits"
        return f"[{sparsity}] {self.quant}"


@dataclass(frozen=True)
class Space:
    """Per-layer sparsity ranges ``{layer: (low, high)}``, the quantization choices, the bit
    ranges, and ``start``: the first configuration tried (every layer at its low end, with the
    gentlest quantization that still compresses)."""

    ranges: dict[str, tuple[float, float]]
    conv_layers: frozenset[str]
    quant: tuple[str, ...]
    bits: tuple[int, int]
    conv_bits: tuple[int, int]
    start: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ranges": {k: list(v) for k, v in self.ranges.items()},
            "quant": list(self.quant),
            "bits": list(self.bits),
            "conv_bits": list(self.conv_bits) if self.conv_layers else None,
        }


def _round(x: float) -> float:
    return round(min(max(x, 0.0), MAX_SPARSITY), 2)


def build_space(
    profile: Any, layers: dict[str, bool], config: AutoConfig, int8_layers: bool = True
) -> Space:
    """The space for ``layers`` (``{name: is_conv}``) under ``config``, bounded by ``profile``
    (its metric in percent); ``int8_layers``: whether any layer is large enough for
    int8-dynamic (latency objective).

    Each layer's sparsity lies in ``[max_sparsity(layer, max_drop / L),
    max_sparsity(layer, one_shot_limit)]``, L being the number of layers: up to the low end
    every layer costs, one-shot and before any fine-tuning, at most its share of the budget, so
    going lower gains nothing; past the high end that layer alone, one-shot, falls off a cliff
    that fine-tuning rarely climbs back.
    """
    share = config.max_drop / max(len(layers), 1)
    ranges = {}
    for name in layers:
        low = _round(profile.max_sparsity(name, share))
        high = _round(profile.max_sparsity(name, config.one_shot_limit))
        ranges[name] = (low, max(low, high))
    quant = QUANT_CHOICES[config.objective]
    if not int8_layers:
        quant = tuple(q for q in quant if q != "int8-dynamic")
    start: dict[str, Any] = {f"sparsity:{name}": low for name, (low, _) in ranges.items()}
    conv = frozenset(name for name, is_conv in layers.items() if is_conv)
    start["quant"] = quant[-1]
    if quant[-1] == "kmeans":
        start["bits"] = config.bits[1]
        if conv:
            start["conv_bits"] = config.conv_bits[1]
    return Space(ranges, conv, quant, config.bits, config.conv_bits, start)


def suggest(trial: Any, space: Space) -> Choice:
    """The :class:`Choice` an Optuna ``trial`` proposes within ``space``."""
    sparsity = {
        name: trial.suggest_float(f"sparsity:{name}", low, high, step=0.01)
        if high > low
        else trial.suggest_float(f"sparsity:{name}", low, low)
        for name, (low, high) in space.ranges.items()
    }
    quant = trial.suggest_categorical("quant", list(space.quant))
    if quant != "kmeans":
        return Choice({k: round(v, 2) for k, v in sparsity.items()}, quant)
    bits = trial.suggest_int("bits", *space.bits)
    conv_bits = trial.suggest_int("conv_bits", *space.conv_bits) if space.conv_layers else None
    return Choice({k: round(v, 2) for k, v in sparsity.items()}, quant, bits, conv_bits)
