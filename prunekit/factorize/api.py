"""``factorize_``: replace each chosen layer by two low-rank layers from its truncated SVD.

Plan (pure): select the layers, take each weight's SVD, choose its rank (from the config's rule,
or from a MACs or parameter budget, :mod:`prunekit.factorize.budget`), keep the layers whose
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

from torch import nn

from prunekit.data.batches import first_batch, split_batch
from prunekit.errors import PrunekitError
from prunekit.factorize.budget import allocate, layer_costs
from prunekit.factorize.config import LowRankConfig
from prunekit.factorize.layers import (
    SWAP_KIND,
    LowRankLayer,
    is_spatial,
    low_rank_like,
    matrix,
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
    budget: dict[str, Any] | None = None

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
        reached = ""
        if self.budget is not None:
            b = self.budget
            reached = f"; whole model {b['reached']:.2f}× fewer {b['kind']} (asked {b['asked']:g}×)"
        return (
            f"{self.method}: {n} layers factorized, {before:,} -> {after:,} parameters"
            f"{reached} ({self.seconds:.1f} s)"
        )

    def table(self) -> Table:
        rows = [[r.name, r.kind, shape(r.shape), f"{r.rank}/{r.full_rank}", f"{r.energy:.4f}",
                 f"{r.params_before:,}", f"{r.params_after:,}", f"{r.error:.4f}"]
                for r in self.layers]  # fmt: skip
        columns = ["layer", "type", "shape", "rank", "energy", "params", "after", "rel. error"]
        return columns, rows


def factorize_(
    model: nn.Module,
    config: LowRankConfig | None = None,
    data: Iterable[Any] | None = None,
    *,
    example_inputs: Any = None,
) -> FactorizeReport:
    """Factorize in place: each chosen ``nn.Linear`` becomes a :class:`LowRankLinear` (in ->
    rank -> out) and each ``nn.Conv2d`` (groups=1) a :class:`LowRankConv2d` (two convolutions
    through ``rank`` channels, split by channel or spatially), from the truncated SVD of its
    weight. ``prunekit.finetune_`` then trains both factors as ordinary layers.

    data: read only for ``macs_reduction`` without ``example_inputs`` (its first batch's
        inputs); the SVD needs the weights only.
    example_inputs: for ``macs_reduction``, the inputs the MACs are counted on (a tensor, a
        tuple or a dict of keyword tensors).

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
    if config.macs_reduction is not None and example_inputs is None:
        if data is None:
            raise PrunekitError(
                f"macs_reduction={config.macs_reduction:g} counts the model's MACs: pass "
                f"example_inputs=(x,) or data="
            )
        example_inputs, _ = split_batch(first_batch(data))
    layers, skipped = _candidates(model, config)
    split = {name: is_spatial(layer, config.decomposition) for name, layer in layers.items()}
    specs = {name: spectrum(matrix(layer, split[name])) for name, layer in layers.items()}
    budget = None
    if config.budget is None:
        ranks = _ranks_by_rule(layers, specs, split, config, skipped)
    else:
        ranks, budget = _ranks_by_budget(model, layers, specs, config, example_inputs)
        for name in layers.keys() - ranks.keys():
            skipped[name] = "kept whole: at the budget's energy it would cost more factorized"
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
        name: low_rank_like(layers[name], *specs[name].factors(rank), rank, split[name])
        for name, rank in ranks.items()
    }
    rows = [_row(n, layers[n], specs[n], rank, split[n]) for n, rank in ranks.items()]
    with transaction(model):
        for name, rank in ranks.items():
            args = swap_args(layers[name], rank, split[name])
            swaps.swap_(model, name, new[name], SWAP_KIND, args)
    return FactorizeReport(
        method="svd",
        config=config.to_dict(),
        layers=rows,
        budget=budget,
        skipped=skipped,
        seconds=time.perf_counter() - start,
    )


def _ranks_by_rule(
    layers: dict[str, nn.Module],
    specs: dict[str, Spectrum],
    split: dict[str, bool],
    config: LowRankConfig,
    skipped: dict[str, str],
) -> dict[str, int]:
    """Each layer's rank from ``rank_ratio`` or ``energy``; layers it would not shrink go to
    ``skipped`` with the reason."""
    ranks: dict[str, int] = {}
    for name, layer in layers.items():
        rank = choose_rank(
            specs[name],
            rank_ratio=config.rank_ratio,
            energy=config.energy,
            min_rank=config.min_rank,
            round_to=config.round_to,
        )
        before, after = weight_params(layer), weight_params(layer, rank, split[name])
        if after < before:
            ranks[name] = rank
        else:
            skipped[name] = (
                f"rank {rank} of {specs[name].full_rank} needs {after:,} weights, the layer has "
                f"{before:,}: no saving"
            )
    return ranks


def _ranks_by_budget(
    model: nn.Module,
    layers: dict[str, nn.Module],
    specs: dict[str, Spectrum],
    config: LowRankConfig,
    example_inputs: Any,
) -> tuple[dict[str, int], dict[str, Any]]:
    """Ranks bringing the whole model's MACs or parameters down by the factor asked."""
    assert config.budget is not None
    kind, reduction = config.budget
    costs, total = layer_costs(
        model, layers, kind, example_inputs, lambda m: is_spatial(m, config.decomposition)
    )

    def choose(spec: Spectrum, energy: float) -> int:
        return choose_rank(spec, energy=energy, min_rank=config.min_rank, round_to=config.round_to)

    found = allocate(specs, costs, total, reduction, choose, kind)
    budget = {
        "kind": kind,
        "asked": reduction,
        "reached": found.reduction,
        "before": found.total_before,
        "after": found.total_after,
        "energy": found.energy,
    }
    log.info(
        "factorize: energy %.4f gives %.2f× fewer %s (asked %g×)",
        found.energy, found.reduction, kind, reduction,
    )  # fmt: skip
    return found.ranks, budget


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


def _row(name: str, layer: nn.Module, spec: Spectrum, rank: int, spatial: bool) -> LayerFactorize:
    bias = layer.bias.numel() if isinstance(layer.bias, nn.Parameter) else 0
    return LayerFactorize(
        name=name,
        kind=type(layer).__name__ + (" spatial" if spatial else ""),
        shape=tuple(layer.weight.shape),
        rank=rank,
        full_rank=spec.full_rank,
        energy=spec.energy(rank),
        params_before=weight_params(layer) + bias,
        params_after=weight_params(layer, rank, spatial) + bias,
        error=spec.error(rank),
    )
