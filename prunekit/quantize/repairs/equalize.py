"""Cross-layer equalization (Nagel et al. 2019, "Data-Free Quantization", §4.1).

For two layers joined by ops that are positively homogeneous per channel (ReLU, max/avg
pooling, dropout in eval), ``f(s·x) = s·f(x)`` for ``s > 0``: dividing output channel ``i`` of
the first layer (its weights and bias) by ``s_i`` and multiplying input channel ``i`` of the
second by ``s_i`` leaves the pair's output unchanged in float. Choosing
``s_i = sqrt(r1_i · r2_i) / r2_i`` (``r``: the channel's largest absolute weight) gives both
layers the same range ``sqrt(r1_i · r2_i)`` for that channel, so no channel is crushed by a
neighbour with a much larger range when weights (or, downstream, activations) share a scale.
A layer between two pairs is rebalanced by each in turn, so the pairs are iterated.

Hand-written because torch.ao's ``_equalize`` is private, measures ranges as max − min, and
cannot rescale a depthwise or grouped conv as the second layer (its input axis has one channel
per group), which is the case this exists for.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import torch
from torch import fx, nn

# Ops through which a per-channel positive scale passes unchanged (f(s·x) = s·f(x)).
_HOMOGENEOUS_MODULES = (
    nn.ReLU,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.Dropout,
    nn.Identity,
)
_HOMOGENEOUS_FUNCTIONS = (torch.relu, torch.nn.functional.relu)
_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Linear)
# A pair counts as equalized once no scale moves by more than this in a sweep.
TOLERANCE = 1e-4
MAX_SWEEPS = 100


@dataclass(frozen=True)
class EqualizeResult:
    """The equalized ``pairs`` (module names, producer first) and the sweeps needed."""

    pairs: list[tuple[str, str]]
    sweeps: int


def _group_index(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """For a layer's ``weight: [out, in / groups, ...]``, the input channel each
    ``[out, in / groups]`` entry reads: ``[out, in / groups]`` int64."""
    out, per_group = weight.shape[0], weight.shape[1]
    group = torch.arange(out) // (out // groups)
    return group[:, None] * per_group + torch.arange(per_group)[None, :]


def output_ranges(weight: torch.Tensor) -> torch.Tensor:
    """``weight: [out, ...]`` → the largest absolute weight of each output channel ``[out]``."""
    return weight.detach().abs().flatten(1).amax(dim=1)


def input_ranges(weight: torch.Tensor, groups: int = 1) -> torch.Tensor:
    """``weight: [out, in / groups, ...]`` → the largest absolute weight reading each input
    channel ``[in]`` (for a depthwise conv, channel ``i``'s filter)."""
    per_entry = weight.detach().abs().flatten(2).amax(dim=2) if weight.dim() > 2 else weight.abs()
    index = _group_index(weight, groups)
    ranges = torch.zeros(weight.shape[1] * groups, dtype=weight.dtype)
    return ranges.scatter_reduce(0, index.flatten(), per_entry.detach().flatten(), "amax")


def equalization_scales(r1: torch.Tensor, r2: torch.Tensor) -> torch.Tensor:
    """``s_i = sqrt(r1_i · r2_i) / r2_i``; 1 where either range is 0 (a dead channel: nothing
    to balance, and dividing by it would not be finite)."""
    alive = (r1 > 0) & (r2 > 0)
    return torch.where(alive, torch.sqrt(r1 / r2.clamp_min(1e-30)), torch.ones_like(r1))


@torch.no_grad()
def rescale_pair_(first: nn.Module, second: nn.Module, scales: torch.Tensor) -> None:
    """Divide output channel ``i`` of ``first`` (weight and bias) by ``scales[i]`` and multiply
    input channel ``i`` of ``second`` by it."""
    shape = (-1,) + (1,) * (first.weight.dim() - 1)
    first.weight.div_(scales.view(shape))
    if first.bias is not None:
        first.bias.div_(scales)
    index = _group_index(second.weight, getattr(second, "groups", 1))
    factor = scales[index].view(*index.shape, *(1,) * (second.weight.dim() - 2))
    second.weight.mul_(factor)


def equalize_pair_(first: nn.Module, second: nn.Module) -> torch.Tensor:
    """Equalize one pair in place; returns the scales applied ``[channels]``."""
    scales = equalization_scales(
        output_ranges(first.weight), input_ranges(second.weight, getattr(second, "groups", 1))
    )
    rescale_pair_(first, second, scales)
    return scales


def find_pairs(model: fx.GraphModule, ignore: Collection[str] = ()) -> list[tuple[str, str]]:
    """Names of (producer, consumer) layers of ``model`` joined only by positively homogeneous
    ops, each intermediate result used once; layers in ``ignore`` are left out.

    Conv feeds conv and linear feeds linear (a flatten in between would remap channels); both
    layers have the same number of channels at the joint.
    """
    modules = dict(model.named_modules())
    pairs = []
    for node in model.graph.nodes:
        first = _layer(node, modules, ignore)
        if first is None:
            continue
        current = node
        while len(current.users) == 1:
            (user,) = current.users
            if user.args[:1] != (current,):
                break
            second = _layer(user, modules, ignore)
            if second is not None:
                if _compatible(modules[first], modules[second]):
                    pairs.append((first, second))
                break
            if not _homogeneous(user, modules):
                break
            current = user
    return pairs


def _layer(node: fx.Node, modules: dict[str, nn.Module], ignore: Collection[str]) -> str | None:
    if node.op != "call_module" or node.target in ignore:
        return None
    return str(node.target) if isinstance(modules[str(node.target)], _LAYERS) else None


def _homogeneous(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return isinstance(modules[str(node.target)], _HOMOGENEOUS_MODULES)
    if node.op == "call_function":
        return node.target in _HOMOGENEOUS_FUNCTIONS
    return node.op == "call_method" and node.target == "relu"


def _compatible(first: nn.Module, second: nn.Module) -> bool:
    same_kind = isinstance(first, nn.Linear) == isinstance(second, nn.Linear)
    channels = second.weight.shape[1] * getattr(second, "groups", 1)
    return same_kind and first.weight.shape[0] == channels


@torch.no_grad()
def equalize_(model: fx.GraphModule, ignore: Collection[str] = ()) -> EqualizeResult:
    """Equalize every pair :func:`find_pairs` finds in ``model`` (BatchNorm already folded into
    the layers), sweeping over all pairs until no scale moves by more than ``TOLERANCE``."""
    pairs = find_pairs(model, ignore)
    modules = dict(model.named_modules())
    sweeps = 0
    while pairs and sweeps < MAX_SWEEPS:
        sweeps += 1
        moved = 0.0
        for a, b in pairs:
            scales = equalize_pair_(modules[a], modules[b])
            moved = max(moved, float((scales - 1).abs().max()))
        if moved <= TOLERANCE:
            break
    return EqualizeResult(pairs, sweeps)
