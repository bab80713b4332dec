"""The model torch.onnx exports in place of a quantized one: the same model with each prunekit
quantized layer replaced by a module that computes the same numbers from ops ONNX has.

- ``Int8Linear`` (fbgemm int8, dynamic activations) -> ``nn.Linear`` with its dequantized
  weight; onnxruntime's dynamic quantization then puts it back on int8 (``int8-dynamic``).
- ``WeightOnlyLinear`` -> MatMulNBits on its own codes (:mod:`prunekit.export.nbits`), or
  ``nn.Linear`` with its dequantized weight when its groups fit no MatMulNBits block.
- ``StaticInt8Region`` (torch.ao FX) -> its QDQ graph (:mod:`prunekit.export.qdq`).
"""

from __future__ import annotations

import copy
from collections import Counter
from dataclasses import dataclass, field

import torch
from torch import nn

from prunekit.export.nbits import NBitsLinear, block_size, container_bits
from prunekit.export.qdq import qdq_graph
from prunekit.quantize.layers import Int8Linear, WeightOnlyLinear
from prunekit.quantize.static import StaticInt8Region

STATIC_FORMS = {
    "conv": "static int8 conv -> QDQ Conv (QLinearConv in onnxruntime)",
    "linear": "static int8 linear -> QDQ Gemm (QGemm in onnxruntime)",
}


@dataclass
class Twin:
    """The model to export and how its quantized layers were written (``forms``: a line per
    form, with how many layers took it)."""

    model: nn.Module
    forms: Counter[str] = field(default_factory=Counter)
    dynamic_int8: bool = False
    static_int8: bool = False
    nbits: bool = False


def export_twin(model: nn.Module) -> Twin | None:
    """The twin of ``model`` (a copy; ``model`` is not changed), or None when it has no
    prunekit quantized layer."""
    twin = Twin(model)
    swaps: dict[int, nn.Module] = {}
    for name, module in model.named_modules():
        if isinstance(module, Int8Linear):
            swaps[id(module)] = _linear(module, module.weight)
            twin.forms["Int8Linear -> int8 MatMul re-quantized by onnxruntime"] += 1
            twin.dynamic_int8 = True
        elif isinstance(module, WeightOnlyLinear):
            swaps[id(module)] = _weight_only(module, twin)
        elif isinstance(module, StaticInt8Region):
            swaps[id(module)], layers = qdq_graph(module.graph, name)
            twin.forms.update({STATIC_FORMS[kind]: n for kind, n in layers.items()})
            twin.static_int8 = True
    if not swaps:
        return None
    # deepcopy's memo puts each replacement where the original was, and copies the rest.
    twin.model = copy.deepcopy(model, memo=swaps)  # type: ignore[arg-type]
    return twin


def _weight_only(layer: WeightOnlyLinear, twin: Twin) -> nn.Module:
    block = block_size(layer)
    if block is None:
        twin.forms[
            f"{layer.bits}-bit weight-only, group_size {layer.group_size} (no MatMulNBits "
            f"block of 16, 32, 64... fits) -> float MatMul on dequantized weights"
        ] += 1
        return _linear(layer, layer.weight)
    width = container_bits(layer.bits)
    twin.forms[f"{layer.bits}-bit weight-only -> MatMulNBits {width}-bit, block {block}"] += 1
    twin.nbits = True
    return NBitsLinear(layer, block)


def _linear(layer: nn.Module, weight: torch.Tensor) -> nn.Linear:
    out, k = weight.shape
    linear = nn.Linear(k, out, bias=layer.bias is not None)
    with torch.no_grad():
        linear.weight.copy_(weight)
        if layer.bias is not None:
            linear.bias.copy_(layer.bias)
    return linear
