"""The dense float model ExecuTorch exports in place of one holding prunekit's own layers:
weight-shared layers as the Linear/Conv they replaced, holding their codebook values; int8 and
weight-only layers as ``nn.Linear`` with their dequantized weights. Also transformers' Conv1D as
the ``nn.Linear`` it is: torchao quantizes Linear layers, and GPT-2's ``Conv1D`` flattens its
input with ``view``, which ExecuTorch's lowering cannot replay at batch > 1 once it drops the
``contiguous()`` copy before it."""

from __future__ import annotations

import copy
from collections import Counter

import torch
from torch import nn

from prunekit.errors import PrunekitError
from prunekit.layout import conv1d_type
from prunekit.quantize.layers import Int8Linear, WeightOnlyLinear
from prunekit.quantize.static import StaticInt8Region
from prunekit.share.layers import SharedConv, SharedLinear

# A model this share of whose weights is zero was pruned: the report says they are stored dense.
MIN_ZEROS = 0.05


def dense_twin(model: nn.Module) -> tuple[nn.Module, str | None]:
    """``model``, or a copy with prunekit's weight-shared and quantized layers (and
    transformers' Conv1D) replaced by the float layers computing the same numbers; and a line
    saying what was replaced (None if nothing but Conv1D was and no weight is zero)."""
    swaps: dict[int, nn.Module] = {}
    kinds: Counter[str] = Counter()
    conv1d = conv1d_type()
    for name, module in model.named_modules():
        if conv1d is not None and type(module) is conv1d:
            swaps[id(module)] = linear(module.weight.detach().t(), module.bias)
            continue
        if isinstance(module, StaticInt8Region):
            raise PrunekitError(
                f"export_executorch: module {name!r} is a static int8 region (torch.ao FX), "
                f"which ExecuTorch cannot load; export the float model with quantize='int8' "
                f"and data (XNNPACK's own static int8)"
            )
        if isinstance(module, SharedLinear):
            weight = module.weight.detach()
            swaps[id(module)] = linear(weight.t() if module.transposed else weight, module.bias)
            kinds["weight-shared"] += 1
        elif isinstance(module, SharedConv):
            swaps[id(module)] = _conv(module)
            kinds["weight-shared"] += 1
        elif isinstance(module, (Int8Linear, WeightOnlyLinear)):
            swaps[id(module)] = linear(module.weight.detach(), module.bias)
            kinds["int8" if isinstance(module, Int8Linear) else "weight-only"] += 1
    # deepcopy's memo puts each replacement where the original was, and copies the rest.
    dense = copy.deepcopy(model, memo=swaps) if swaps else model  # type: ignore[arg-type]
    notes = [f"{n} {kind} layers as float layers with their values" for kind, n in kinds.items()]
    zeros, count = _zeros(dense)
    if count and zeros / count >= MIN_ZEROS:
        notes.append(f"{zeros / count:.0%} of the weights are zero and stored dense")
    return dense, "; ".join(notes) or None


def linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    out, k = weight.shape
    linear = nn.Linear(k, out, bias=bias is not None)
    with torch.no_grad():
        linear.weight.copy_(weight)
        if bias is not None:
            linear.bias.copy_(bias)
    return linear


def _conv(shared: nn.Module) -> nn.Module:
    cls = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[shared.dims]
    conv = cls(
        shared.in_channels,
        shared.out_channels,
        shared.kernel_size,
        stride=shared.stride,
        padding=shared.padding,
        dilation=shared.dilation,
        groups=shared.groups,
        bias=shared.bias is not None,
        padding_mode=shared.padding_mode,
    )
    with torch.no_grad():
        conv.weight.copy_(shared.weight)
        if shared.bias is not None:
            conv.bias.copy_(shared.bias)
    return conv


def _zeros(model: nn.Module) -> tuple[int, int]:
    zeros = count = 0
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            zeros += int((module.weight == 0).sum())
            count += module.weight.numel()
    return zeros, count
