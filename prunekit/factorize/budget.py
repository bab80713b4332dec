"""Ranks from a budget: one energy threshold for every layer, searched until the model's MACs or
parameters shrink by the factor asked.

A layer's cost is linear in its rank (``rank · per_rank``: both factors grow by one row or
column per unit of rank), so the search needs only each layer's dense cost and its cost per
unit of rank (:class:`LayerCost`, measured once by :func:`layer_costs`), and
:func:`allocate` is pure. Why one energy threshold rather than one rank ratio: layers whose
spectrum falls off fast give up rank cheaply, layers that need all their rank keep it (and
stay dense when a factorization would cost more than the layer does).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from prunekit.errors import PrunekitError
from prunekit.factorize.svd import Spectrum
from prunekit.measure import count_macs, count_params
from prunekit.measure._common import call, evaluating, model_device, to_device

# Bisection steps on the energy threshold: 2^-40 is far below the gap between two ranks.
STEPS = 40


@dataclass(frozen=True)
class LayerCost:
    """One layer's cost (MACs for the example inputs, or weight parameters): ``dense`` as it
    is, ``per_rank`` for each unit of rank once factorized."""

    dense: int
    per_rank: int

    def at(self, rank: int) -> int:
        return rank * self.per_rank


@dataclass(frozen=True)
class Allocation:
    """The ranks chosen (layers factorized only), the energy threshold that gave them, and the
    model's total cost before and after."""

    ranks: dict[str, int]
    energy: float
    total_before: int
    total_after: int

    @property
    def reduction(self) -> float:
        return self.total_before / max(self.total_after, 1)


def allocate(
    spectra: Mapping[str, Spectrum],
    costs: Mapping[str, LayerCost],
    total: int,
    reduction: float,
    choose: Callable[[Spectrum, float], int],
    what: str,
) -> Allocation:
    """The highest energy threshold whose ranks bring ``total`` down ``reduction``-fold.

    choose: ``(spectrum, energy) -> rank`` (the config's ``min_rank`` and ``round_to``
    applied). A layer is factorized only where its factors cost less than it does. Raises a
    :class:`PrunekitError` naming the most the layers can give when even the lowest ranks do
    not reach the target.
    """
    target = total / reduction

    def at(energy: float) -> tuple[dict[str, int], int]:
        ranks, after = {}, total
        for name, spec in spectra.items():
            rank = choose(spec, energy)
            cost = costs[name]
            if cost.at(rank) < cost.dense:
                ranks[name] = rank
                after -= cost.dense - cost.at(rank)
        return ranks, after

    ranks, after = at(0.0)
    if after > target:
        raise PrunekitError(
            f"{what}_reduction: {reduction:g}× is out of reach: factorizing every selected "
            f"layer at its lowest rank gives {total / max(after, 1):.2f}× fewer {what} "
            f"({total:,} -> {after:,}); ask for less, lower min_rank, or select more layers "
            f"with targets"
        )
    low, high = 0.0, 1.0
    for _ in range(STEPS):
        mid = (low + high) / 2
        if at(mid)[1] <= target:
            low = mid
        else:
            high = mid
    ranks, after = at(low)
    return Allocation(ranks=ranks, energy=low, total_before=total, total_after=after)


def layer_costs(
    model: nn.Module,
    layers: Mapping[str, nn.Module],
    kind: str,
    example_inputs: Any,
    spatial: Callable[[nn.Module], bool],
) -> tuple[dict[str, LayerCost], int]:
    """Each layer's :class:`LayerCost` and the whole model's total, in ``kind`` (``"macs"``
    for ``example_inputs``, or ``"params"``). spatial: whether a layer is split spatially."""
    if kind == "params":
        costs = {name: _param_cost(layer, spatial(layer)) for name, layer in layers.items()}
        return costs, count_params(model)
    shapes = _io_shapes(model, layers, example_inputs)
    costs = {
        name: _mac_cost(layer, *shapes[name], spatial(layer)) for name, layer in layers.items()
    }
    return costs, count_macs(model, example_inputs).dense


def _param_cost(layer: nn.Module, spatial: bool) -> LayerCost:
    w = layer.weight
    out, cin = w.shape[0], w.shape[1]
    kh, kw = (w.shape[2], w.shape[3]) if w.dim() == 4 else (1, 1)
    rows, cols = (out * kw, cin * kh) if spatial else (out, cin * kh * kw)
    return LayerCost(dense=rows * cols, per_rank=rows + cols)


def _mac_cost(layer: nn.Module, x: torch.Size, y: torch.Size, spatial: bool) -> LayerCost:
    """MACs of a Linear (``x: [..., in]``) or a Conv2d (``x: [N, C, H, W]``, ``y: [N, O, Ho,
    Wo]``)."""
    w = layer.weight
    if isinstance(layer, nn.Linear):
        tokens = x.numel() // x[-1] if len(x) else 1
        out, cin = w.shape
        return LayerCost(dense=tokens * out * cin, per_rank=tokens * (out + cin))
    out, cin, kh, kw = w.shape
    n, width_in = x[0], x[-1]
    ho, wo = y[-2], y[-1]
    dense = n * ho * wo * out * cin * kh * kw
    if not spatial:
        return LayerCost(dense=dense, per_rank=n * ho * wo * (cin * kh * kw + out))
    # The k×1 conv keeps the input's width (kernel 1, no horizontal padding or stride): it
    # runs on Ho × W positions, the 1×k conv on Ho × Wo.
    return LayerCost(dense=dense, per_rank=n * ho * (width_in * cin * kh + wo * out * kw))


def _io_shapes(
    model: nn.Module, layers: Mapping[str, nn.Module], example_inputs: Any
) -> dict[str, tuple[torch.Size, torch.Size]]:
    """Each layer's input and output shape in one forward pass on ``example_inputs``."""
    shapes: dict[str, tuple[torch.Size, torch.Size]] = {}

    def hook(name: str) -> Callable[..., None]:
        def record(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            shapes.setdefault(name, (args[0].shape, output.shape))

        return record

    handles = [layer.register_forward_hook(hook(name)) for name, layer in layers.items()]
    try:
        inputs = to_device(example_inputs, model_device(model))
        with evaluating(model), torch.no_grad():
            call(model, inputs)
    finally:
        for handle in handles:
            handle.remove()
    unused = sorted(set(layers) - set(shapes))
    if unused:
        raise PrunekitError(
            f"example_inputs: the forward pass never ran {', '.join(unused)}, so their MACs are "
            f"unknown; pass inputs that reach every selected layer, or leave those out with "
            f"ignore"
        )
    return shapes
