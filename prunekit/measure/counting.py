"""Counting parameters and non-zeros; sparsity of the layers pruning acts on."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from prunekit.surgery.swaps import swap_record
from prunekit.targets import prunable_types

FP32_BYTES = 4


def _logical_tensors(model: nn.Module) -> list[torch.Tensor]:
    """The model's weights as a user thinks of them: plain parameters, and for a swapped-in
    compressed layer (shared codebook, int8) its decoded ``weight`` and bias instead of its
    storage (codebook, indices, scales); storage size is what the artifact bytes report."""
    swapped = {entry["module"] for entry in swap_record(model)}
    inside: set[int] = set()
    tensors: list[torch.Tensor] = []
    for name in swapped:
        module = model.get_submodule(name)
        weight = getattr(module, "weight", None)
        if not isinstance(weight, torch.Tensor):
            continue  # a structural swap (low-rank factors): its parameters are its weights
        inside.update(id(p) for p in module.parameters())
        tensors.append(weight.detach())
        bias = getattr(module, "bias", None)
        if isinstance(bias, torch.Tensor):
            tensors.append(bias.detach())
    tensors += [p for p in model.parameters() if id(p) not in inside]
    return tensors


def count_params(model: nn.Module) -> int:
    """Number of parameters of ``model`` (a tied weight counts once; a compressed layer counts
    the weights it represents)."""
    return sum(t.numel() for t in _logical_tensors(model))


def count_nonzeros(model: nn.Module) -> int:
    """Number of parameters of ``model`` that are not exactly zero (a tied weight counts once)."""
    return sum(int(torch.count_nonzero(t)) for t in _logical_tensors(model))


def dense_bytes(model: nn.Module) -> int:
    """Bytes the parameters take stored densely in fp32: ``4 * count_params(model)``."""
    return FP32_BYTES * count_params(model)


def prunable_weights(model: nn.Module) -> Iterator[tuple[str, nn.Module, torch.Tensor]]:
    """``(name, module, weight)`` for every prunable layer (Linear/Conv, transformers' Conv1D)
    that has a weight tensor: the layers whose cost scales with their weight density."""
    kinds = prunable_types()
    swapped = {entry["module"] for entry in swap_record(model)}
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if (isinstance(module, kinds) or name in swapped) and isinstance(weight, torch.Tensor):
            yield name, module, weight


def weight_density(module: nn.Module) -> float:
    """Fraction of ``module.weight`` that is non-zero, in [0, 1]; 1.0 when it has no weight."""
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.numel() == 0:
        return 1.0
    return int(torch.count_nonzero(weight)) / weight.numel()


def per_layer_sparsity(model: nn.Module) -> dict[str, float]:
    """Module name -> fraction of its weight that is zero, for every Linear/Conv module."""
    return {name: 1.0 - weight_density(module) for name, module, _ in prunable_weights(model)}


def prunable_sparsity(model: nn.Module) -> float:
    """Fraction of zeros over all Linear/Conv weights together (0.0 when there are none)."""
    weights = [w for _, _, w in prunable_weights(model)]
    total = sum(w.numel() for w in weights)
    zeros = total - sum(int(torch.count_nonzero(w)) for w in weights)
    return zeros / total if total else 0.0
