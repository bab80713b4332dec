"""``factorize_``: replace each chosen layer by two low-rank layers from its truncated SVD.

Plan (pure): select the layers, take each weight's SVD, choose its rank, keep the layers whose
factors are smaller than the weight. Apply: swap each for its low-rank layer
(:mod:`prunekit.factorize.layers`), recorded for ``load``. Every check and every SVD runs
before the first swap, and the swaps run in one transaction, so if this raises the model is
as it was.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from prunekit.errors import PrunekitError
from prunekit.factorize.config import LowRankConfig
from prunekit.factorize.layers import (
    SWAP_KIND,
    LowRankLayer,
    low_rank_like,
    swap_args,
    unsupported,
    weight_params,
)
from prunekit.factorize.svd import Spectrum, choose_rank, spectrum
from prunekit.quantize.select import tied_weights
from prunekit.report import Report, Table, shape
from prunekit.surgery import swaps
from prunekit.surgery.transaction import transaction
from prunekit.targets import select_layers

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LayerFactorize:
    """One factorized layer: its weight ``shape``, the ``rank`` kept of ``full_rank``, the
    fraction of the squared spectrum kept (``energy``), its parameters (weight and bias)
    before and after, and the relative error ``‖W − W_r‖ / ‖W‖`` of its weight."""

    name: str
    kind: str
    shape: tuple[int, ...]
    rank: int
    full_rank: int
    energy: float
    params_before: int
    params_after: int
    error: float


@dataclass(kw_only=True)
class FactorizeReport(Report):
    """Per-layer ranks of a ``factorize_`` call; ``skipped``: layer -> why not factorized.
    ``params_before``/``params_after``: the factorized layers' parameters, summed."""

    layers: list[LayerFactorize]

    computed = ("params_before", "params_after")

    @property
    def params_before(self) -> int:
        return sum(r.params_before for r in self.layers)

    @property
    def params_after(self) -> int:
        return sum(r.params_after for r in self.layers)

    @property
    def ranks(self) -> dict[str, int]:
        return {r.name: r.rank for r in self.layers}

    @property
    def errors(self) -> dict[str, float]:
        return {r.name: r.error for r in self.layers}

    def title(self) -> str:
        n, before, after = len(self.layers), self.params_before, self.params_after
        return (
            f"{self.method}: {n} layers factorized, {before:,} -> {after:,} parameters "
            f"({self.seconds:.1f} s)"
        )

    def table(self) -> Table:
        rows = [[r.name, r.kind, shape(r.shape), f"{r.rank}/{r.full_rank}", f"{r.energy:.4f}",
                 f"{r.params_before:,}", f"{r.params_after:,}", f"{r.error:.4f}"]
                for r in self.layers]  # fmt: skip
        columns = ["layer", "type", "shape", "rank", "energy", "params", "after", "rel. error"]
        return columns, rows


def factorize_(
    model: nn.Module, config: LowRankConfig | None = None, data: Iterable[Any] | None = None
) -> FactorizeReport:
    """Factorize in place: each chosen ``nn.Linear`` becomes a :class:`LowRankLinear` (in ->
    rank -> out) and each ``nn.Conv2d`` (groups=1) a :class:`LowRankConv2d` (k×k conv to
    ``rank`` channels, then 1×1), from the truncated SVD of its weight ``[out, in·kh·kw]``.
    ``prunekit.finetune_`` then trains both factors as ordinary layers.

    data: not read (the SVD needs the weights only); taken so that every verb is called alike.

    A layer is factorized only if its factors have fewer parameters than its weight; the
    others, layers whose weight is tied to another module's and layers already factorized
    are left as they were and listed in ``FactorizeReport.skipped``. Returns a
    :class:`FactorizeReport`. If this raises, the model is unchanged.
    """
    config = LowRankConfig() if config is None else config
    if not isinstance(config, LowRankConfig):
        raise TypeError(f"config: expected a LowRankConfig; got {type(config).__name__}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module; got {type(model).__name__}")
    start = time.perf_counter()
    layers, skipped = _candidates(model, config)
    specs = {name: spectrum(_matrix(layer)) for name, layer in layers.items()}
    ranks: dict[str, int] = {}
    for name, layer in layers.items():
        rank = choose_rank(
            specs[name],
            rank_ratio=config.rank_ratio,
            energy=config.energy,
            min_rank=config.min_rank,
            round_to=config.round_to,
        )
        before, after = weight_params(layer), weight_params(layer, rank)
        if after < before:
            ranks[name] = rank
        else:
            skipped[name] = (
                f"rank {rank} of {specs[name].full_rank} needs {after:,} weights, the layer has "
                f"{before:,}: no saving"
            )
    if not ranks:
        raise PrunekitError(
            f"config: no selected layer gets smaller with rank_ratio={config.rank_ratio}, "
            f"energy={config.energy}, min_rank={config.min_rank}, round_to={config.round_to} "
            f"({'; '.join(f'{n}: {w}' for n, w in skipped.items())}); lower rank_ratio or "
            f"energy, or choose larger layers with targets"
        )
    for name, why in skipped.items():
        log.info("not factorizing %s: %s", name, why)
    new = {
        name: low_rank_like(layers[name], *specs[name].factors(rank), rank)
        for name, rank in ranks.items()
    }
    rows = [_row(name, layers[name], specs[name], rank) for name, rank in ranks.items()]
    with transaction(model):
        for name, rank in ranks.items():
            swaps.swap_(model, name, new[name], SWAP_KIND, swap_args(layers[name], rank))
    return FactorizeReport(
        method="svd",
        config=config.to_dict(),
        layers=rows,
        skipped=skipped,
        seconds=time.perf_counter() - start,
    )


def _candidates(
    model: nn.Module, config: LowRankConfig
) -> tuple[dict[str, nn.Module], dict[str, str]]:
    """The selected layers that can be factorized, and why each other selected one cannot."""
    chosen = select_layers(model, config.targets, config.ignore)
    tied = tied_weights(model)
    factorized = [n for n, m in model.named_modules() if isinstance(m, LowRankLayer)]
    attention = [n for n, m in model.named_modules() if isinstance(m, nn.MultiheadAttention)]
    skipped: dict[str, str] = {}
    for name, layer in chosen.items():
        inside = next((p for p in factorized if name.startswith(p + ".")), None)
        reader = next((p for p in attention if name.startswith(p + ".")), None)
        if inside is not None:
            skipped[name] = f"already factorized (part of {inside})"
        elif reader is not None:
            skipped[name] = f"its weight is read directly by the nn.MultiheadAttention {reader}"
        elif name in tied:
            skipped[name] = f"weight tied to {tied[name]}"
        elif (why := unsupported(layer)) is not None:
            skipped[name] = why
    return {n: m for n, m in chosen.items() if n not in skipped}, skipped


def _matrix(layer: nn.Module) -> torch.Tensor:
    """The weight as a matrix ``[out, in·kh·kw]``."""
    w = layer.weight
    return w.reshape(w.shape[0], -1)


def _row(name: str, layer: nn.Module, spec: Spectrum, rank: int) -> LayerFactorize:
    bias = layer.bias.numel() if isinstance(layer.bias, nn.Parameter) else 0
    return LayerFactorize(
        name=name,
        kind=type(layer).__name__,
        shape=tuple(layer.weight.shape),
        rank=rank,
        full_rank=spec.full_rank,
        energy=spec.energy(rank),
        params_before=weight_params(layer) + bias,
        params_after=weight_params(layer, rank) + bias,
        error=spec.error(rank),
    )
