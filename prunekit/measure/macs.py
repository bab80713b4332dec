"""Multiply-accumulates counted by PyTorch's own FlopCounterMode (MACs = FLOPs / 2)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from prunekit.measure._common import ExampleInputs, call, evaluating, model_device, to_device
from prunekit.measure.counting import prunable_weights, weight_density


@dataclass(frozen=True)
class MacCount:
    """MACs of one forward pass on the inputs given.

    ``dense``: every multiply-accumulate the dense kernels execute. ``effective``: the same with
    each Linear/Conv module's MACs scaled by its weight density, i.e. the work left if zero
    weights were skipped; the rest of the model counts unchanged. ``per_module``: module name
    (as in ``named_modules``, ``""`` for the root) -> its dense MACs, children included.
    """

    dense: int
    effective: int
    per_module: dict[str, int] = field(default_factory=dict)


def _sdpa_flops(q_shape: Any, k_shape: Any, v_shape: Any, *args: Any, **kwargs: Any) -> int:
    return sdpa_flop_count(q_shape, k_shape, v_shape)


def _quantized_linear_flops(x_shape: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    # out [..., N] from x [..., K]: one multiply-accumulate per output and input feature.
    return 2 * math.prod(out_shape) * int(x_shape[-1])


def _quantized_conv_flops(x_shape: Any, packed: Any, *args: Any, out_shape: Any = None,
                          **kwargs: Any) -> int:  # fmt: skip
    weight = packed.unpack()[0]  # [out, in / groups, *kernel]
    return 2 * math.prod(out_shape) * math.prod(weight.shape[1:])


def _quantized_ops() -> dict[Any, Any]:
    """The int8 kernels prunekit's quantized layers run (fbgemm via torch.ops.quantized), which
    FlopCounterMode does not know: same MACs as the float layers they replace."""
    q = torch.ops.quantized  # FlopCounterMode looks ops up by packet (all overloads)
    linears = [q.linear_dynamic, q.linear, q.linear_relu]
    convs = [q.conv1d, q.conv1d_relu, q.conv2d, q.conv2d_relu, q.conv3d, q.conv3d_relu]
    return {**dict.fromkeys(linears, _quantized_linear_flops),
            **dict.fromkeys(convs, _quantized_conv_flops)}  # fmt: skip


def count_macs(model: nn.Module, inputs: ExampleInputs) -> MacCount:
    """Count the MACs of ``model(inputs)`` in eval mode, without gradients.

    ``inputs``: a tensor, a tuple of positional tensors or a dict of keyword tensors, at the
    batch size to count (MACs scale linearly with it). The model's modes are restored after.
    """
    inputs = to_device(inputs, model_device(model))
    # PyTorch counts the CUDA attention kernels but not the CPU one, which every model using
    # scaled_dot_product_attention runs here: same formula, registered for it.
    cpu_sdpa = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    mapping = {cpu_sdpa: _sdpa_flops, **_quantized_ops()}
    counter = FlopCounterMode(display=False, custom_mapping=mapping)
    with evaluating(model), torch.no_grad(), counter:
        call(model, inputs)
    flops = {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}
    # FlopCounterMode names the root by its class and children "Root.child.grandchild".
    root = type(model).__name__
    per_module = {
        name: flops.get(f"{root}.{name}" if name else root, 0) // 2
        for name, _ in model.named_modules()
    }
    dense = flops.get("Global", 0) // 2
    skipped = sum(
        per_module[name] * (1.0 - weight_density(module))
        for name, module, _ in prunable_weights(model)
    )
    return MacCount(dense=dense, effective=round(dense - skipped), per_module=per_module)
