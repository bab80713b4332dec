"""``quantize_``: the verb, and the data-free methods (int8 dynamic, round-to-nearest)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from prunekit.errors import PrunekitError
from prunekit.layout import canonical
from prunekit.memory import release_freed
from prunekit.quantize.config import Int8DynamicConfig, QuantizeConfig, RTNConfig
from prunekit.quantize.grid import rtn_quantize
from prunekit.quantize.layers import (
    INT8_SWAP,
    WEIGHT_ONLY_SWAP,
    Int8Linear,
    WeightOnlyLinear,
    weight_only_args,
)
from prunekit.quantize.report import QuantizeReport, layer_row
from prunekit.quantize.select import choose_linears, layer_bits, linear_kinds, swap_all_
from prunekit.registry import method_for_config
from prunekit.share.layers import SharedLinear
from prunekit.surgery.transaction import transaction


def quantize_(
    model: nn.Module, config: QuantizeConfig, data: Iterable[Any] | None = None
) -> QuantizeReport:
    """Quantize ``model`` in place as ``config`` says; returns what was done per layer.

    data: calibration batches for the methods that need them (``Int8StaticConfig``,
        ``GPTQConfig``); at most ``config.num_samples`` samples are read.

    The chosen layers are swapped for quantized modules whose state is plain tensors
    (``pk.save`` stores them, ``pk.load`` rebuilds them). ``QATConfig`` swaps in fake-quantized
    layers to train; :func:`prunekit.quantize.convert_` finishes them. Everything is checked
    before the first swap, and a failure part-way swaps every layer back: if this raises, the
    model is as it was.
    """
    if not isinstance(config, QuantizeConfig):
        raise TypeError(
            f"config: expected a quantization config such as Int8DynamicConfig(); got "
            f"{type(config).__name__}"
        )
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module; got {type(model).__name__}")
    info = method_for_config(config)
    if config.needs_data and data is None:
        raise PrunekitError(f"data: {info.name} needs calibration batches; pass data=...")
    start = time.perf_counter()
    with transaction(model):
        report: QuantizeReport = info.impl(model, config, data)
    report.seconds = time.perf_counter() - start
    return report


def _check_cpu(layers: dict[str, nn.Module], method: str) -> None:
    for name, layer in layers.items():
        if layer.weight.device.type != "cpu":
            raise PrunekitError(
                f"{method}: layer {name!r} is on {layer.weight.device}; int8 dynamic "
                f"quantization runs torch's CPU kernels; move the model to the CPU first"
            )


@torch.no_grad()
def int8_dynamic_(
    model: nn.Module, config: Int8DynamicConfig, data: Iterable[Any] | None = None
) -> QuantizeReport:
    # Weight-shared layers quantize too: int8 kernels are what make them fast (the codebook
    # only makes them small), and a recipe may share weights and then quantize.
    kinds = (*linear_kinds(), SharedLinear)
    layers, skipped = choose_linears(model, config, min_features=config.min_features, kinds=kinds)
    _check_cpu(layers, config.method)
    new = {name: Int8Linear.from_layer(layer) for name, layer in layers.items()}
    rows = [layer_row(n, layers[n], new[n], 8, None) for n in new]
    swap_all_(model, new, INT8_SWAP, {})
    return QuantizeReport(
        method=config.method, config=config.to_dict(), layers=rows, skipped=skipped
    )


@torch.no_grad()
def rtn_(model: nn.Module, config: RTNConfig, data: Iterable[Any] | None = None) -> QuantizeReport:
    layers, skipped = choose_linears(model, config, blocks_only=True)
    bits = layer_bits(layers, config)
    new: dict[str, WeightOnlyLinear] = {}
    rows = []
    for name, layer in layers.items():
        codes, grid = rtn_quantize(
            canonical(layer, layer.weight.detach()),
            bits[name],
            config.group_size,
            config.symmetric,
        )
        new[name] = m = WeightOnlyLinear.from_codes(layer, codes, grid, config.symmetric)
        rows.append(layer_row(name, layer, m, m.bits, m.group_size))
        del codes, grid
        # The layer's float32 transients are freed into malloc's heap, between the packed
        # codes kept: hand them back, or the heap grows by most of a layer per layer.
        release_freed()
    swap_all_(model, new, WEIGHT_ONLY_SWAP, {n: weight_only_args(m) for n, m in new.items()})
    return QuantizeReport(
        method=config.method, config=config.to_dict(), layers=rows, skipped=skipped
    )
