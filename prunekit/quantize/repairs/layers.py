"""The quantized layers of a torch.ao-converted graph, seen as float ops the repairs can run.

A converted conv or linear (``ConvReLU2d``, ``Linear``…) holds an int8 weight per output
channel and a float bias; its pre-activation output on a dequantized input ``x̂`` is the float op
with the dequantized weight, which is how the repairs compare it with the float layer.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial

import torch
import torch.ao.nn.intrinsic.quantized as nniq
import torch.ao.nn.quantized as nnq
import torch.nn.functional as F
from torch import nn

_RELU_FUSED = (nniq.ConvReLU1d, nniq.ConvReLU2d, nniq.ConvReLU3d, nniq.LinearReLU)
_PLAIN = (nnq.Conv1d, nnq.Conv2d, nnq.Conv3d, nnq.Linear)
_CONV_FN = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


@dataclass
class QuantLayer:
    """One quantized layer: ``name`` in the converted graph and in the float graph it came from."""

    name: str
    module: nn.Module  # the converted (int8) module
    relu: bool  # ReLU fused into it

    @property
    def codes(self) -> torch.Tensor:
        """The int8 weight's integer values as float ``[out, ...]``."""
        return self.module.weight().int_repr().float()

    @property
    def scales(self) -> torch.Tensor:
        """One scale per output channel ``[out]`` (float64)."""
        return self.module.weight().q_per_channel_scales()

    @property
    def bias(self) -> torch.Tensor | None:
        return self.module.bias()

    @property
    def linear(self) -> bool:
        """A linear layer (channels last) rather than a conv (channels at dim 1)."""
        return isinstance(self.module, nnq.Linear)

    def pre_activation(
        self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        """The layer's op on float ``x`` with ``weight`` and ``bias``, before any ReLU."""
        m = self.module
        if self.linear:
            return F.linear(x, weight, bias)
        conv = _CONV_FN[weight.dim() - 2]
        return conv(x, weight, bias, m.stride, m.padding, m.dilation, m.groups)

    def op(self, bias: torch.Tensor | None) -> partial:
        """``op(x, weight)``: the layer's output (ReLU included when fused) with ``bias``."""
        return partial(_apply, self, bias)

    def set_(self, codes: torch.Tensor, bias: torch.Tensor | None) -> None:
        """Store integer ``codes`` (same scales) and ``bias`` in the converted module."""
        old = self.module.weight()
        weight = torch._make_per_channel_quantized_tensor(
            codes.to(torch.int8), old.q_per_channel_scales(), old.q_per_channel_zero_points(), 0
        )
        self.module.set_weight_bias(weight, bias)


def _apply(layer: QuantLayer, bias: torch.Tensor | None, x: torch.Tensor, w: torch.Tensor):
    out = layer.pre_activation(x, w, bias)
    return torch.relu(out) if layer.relu else out


def quant_layers(graph: torch.fx.GraphModule) -> list[QuantLayer]:
    """The int8 convs and linears of ``graph`` with per-channel weights, in execution order."""
    modules = dict(graph.named_modules())
    found = []
    for node in graph.graph.nodes:
        m = modules.get(str(node.target)) if node.op == "call_module" else None
        if type(m) in _PLAIN + _RELU_FUSED and m.weight().qscheme() in (
            torch.per_channel_affine,
            torch.per_channel_symmetric,
        ):
            found.append(QuantLayer(str(node.target), m, isinstance(m, _RELU_FUSED)))
    return found


@torch.no_grad()
def layer_inputs(model: nn.Module, layer: str, batches: Iterable[torch.Tensor]) -> torch.Tensor:
    """What submodule ``layer`` of ``model`` receives on ``batches``, dequantized, concatenated
    along the batch: ``[N, ...]``."""
    seen: list[torch.Tensor] = []

    def record(_m: nn.Module, args: tuple) -> None:
        x = args[0]
        seen.append(x.dequantize() if x.is_quantized else x.detach().clone())

    handle = model.get_submodule(layer).register_forward_pre_hook(record)
    try:
        for x in batches:
            model(x)
    finally:
        handle.remove()
    return torch.cat(seen)
