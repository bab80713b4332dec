"""Which layers a quantization method takes, and why the others are left in floating point.

Only reads the model: every check happens here, before the first swap.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from prunekit.calibrate import find_blocks
from prunekit.errors import PrunekitError
from prunekit.layout import conv1d_type
from prunekit.quantize.config import QuantizeConfig, WeightOnlyConfig
from prunekit.quantize.layers import linear_shape
from prunekit.surgery.swaps import swap_
from prunekit.targets import per_layer, select_layers


def linear_kinds() -> tuple[type[nn.Module], ...]:
    """nn.Linear, plus transformers' Conv1D when transformers is in use."""
    conv1d = conv1d_type()
    return (nn.Linear,) if conv1d is None else (nn.Linear, conv1d)


def tied_weights(model: nn.Module) -> dict[str, str]:
    """Module name → the other module whose weight it shares (for every shared weight)."""
    owners: dict[int, list[str]] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        weight = module.__dict__.get("_parameters", {}).get("weight")
        if isinstance(weight, torch.Tensor):
            owners.setdefault(id(weight), []).append(name)
    tied: dict[str, str] = {}
    for names in owners.values():
        for name in names:
            others = [n for n in names if n != name]
            if others:
                tied[name] = others[0]
    return tied


def choose_linears(
    model: nn.Module,
    config: QuantizeConfig,
    *,
    min_features: int = 0,
    blocks_only: bool = False,
    kinds: tuple[type[nn.Module], ...] | None = None,
    skip: Callable[[nn.Module], str | None] | None = None,
) -> tuple[dict[str, nn.Module], dict[str, str]]:
    """``(layers to quantize, {skipped layer: why})``.

    Left out: layers whose weight is tied to another module's; layers with fewer than
    ``min_features`` inputs or outputs; with ``blocks_only`` and default targets, layers outside
    a transformer's repeated blocks; layers for which ``skip(layer)`` gives a reason. A layer
    named explicitly in ``targets`` that would be left out for being tied is an error instead.
    """
    kinds = kinds or linear_kinds()
    layers = select_layers(model, config.targets, config.ignore, kinds=kinds)
    tied = tied_weights(model)
    explicit = config.targets is not None
    inside = _inside_blocks(model) if blocks_only and not explicit else None
    chosen: dict[str, nn.Module] = {}
    skipped: dict[str, str] = {}
    for name, layer in layers.items():
        if name in tied:
            if explicit:
                raise PrunekitError(
                    f"targets: layer {name!r} shares its weight with {tied[name]!r}; quantizing "
                    f"it would break the tie; leave it out (ignore=[{name!r}])"
                )
            skipped[name] = f"weight tied to {tied[name]}"
        elif inside is not None and not any(name.startswith(f"{b}.") for b in inside):
            skipped[name] = "outside the repeated blocks (name it in targets to quantize it)"
        elif min_features and min(linear_shape(layer)) < min_features:
            out, k = linear_shape(layer)
            skipped[name] = f"{k}→{out} features < min_features={min_features}"
        elif skip is not None and (why := skip(layer)) is not None:
            skipped[name] = why
        else:
            chosen[name] = layer
    if not chosen:
        reasons = "; ".join(f"{n}: {why}" for n, why in list(skipped.items())[:4])
        raise PrunekitError(
            f"{config.method}: no layer left to quantize ({reasons}); adjust targets/ignore"
            + (" or lower min_features" if min_features else "")
        )
    return chosen, skipped


def layer_bits(layers: dict[str, nn.Module], config: WeightOnlyConfig) -> dict[str, int]:
    """``{layer: bits}`` of the chosen ``layers``: ``config.layer_bits``' first matching
    selector, else ``config.bits``."""
    return per_layer(layers, config.layer_bits, dict.fromkeys(layers, config.bits), "layer_bits")


def _inside_blocks(model: nn.Module) -> list[str] | None:
    blocks = find_blocks(model)
    return None if blocks is None else [name for name, _ in blocks]


def swap_all_(
    model: nn.Module, new: dict[str, nn.Module], kind: str, args: dict[str, dict[str, Any]]
) -> dict[str, nn.Module]:
    """Swap every ``new[name]`` in (recorded as ``kind`` with ``args[name]``); returns the
    replaced modules. Callers run inside ``surgery.transaction``, which undoes a failure."""
    return {
        name: swap_(model, name, module, kind, args.get(name, {})) for name, module in new.items()
    }
