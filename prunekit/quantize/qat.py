"""Quantization-aware training: fake-quantized Linear/Conv2d layers, then real quantized ones.

``prepare_qat_`` swaps each chosen layer for a subclass of its own type (so prunekit's training
loop and its sparsity masks treat it as before; build the optimizer after preparing, the
parameters are new tensors) whose forward rounds the weight onto its
per-channel grid and the input onto an 8-bit grid spanning the ranges observed in training;
gradients pass straight through the rounding. ``convert_`` then swaps in the real thing:
``Int8Linear`` (fbgemm int8) for 8-bit linears, ``WeightOnlyLinear`` codes below 8 bits, and
for convolutions a plain ``nn.Conv2d`` holding the grid values (fp32 compute: no fast dynamic
int8 conv kernel exists; ``Int8StaticConfig`` runs convs in int8).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from prunekit.errors import PrunekitError
from prunekit.layout import canonical
from prunekit.quantize.config import QATConfig
from prunekit.quantize.grid import (
    fake_quant_per_channel,
    fake_quant_range,
    rtn_quantize,
    sqnr_db,
)
from prunekit.quantize.layers import (
    INT8_SWAP,
    WEIGHT_ONLY_SWAP,
    Int8Linear,
    WeightOnlyLinear,
    linear_shape,
    weight_only_args,
)
from prunekit.quantize.report import LayerQuant, QuantizeReport, layer_row, state_bytes
from prunekit.quantize.select import choose_linears, linear_kinds, swap_all_
from prunekit.surgery.swaps import int_arg, register_swap
from prunekit.surgery.transaction import transaction

QAT_SWAP = "qat"
CONVERTED_CONV_SWAP = "qat-conv2d"


class _FakeQuant:
    """What the fake-quantized layers share: settings, observed input range, the rounding."""

    bits: int
    activation_bits: int | None
    momentum: float
    act_range: torch.Tensor
    weight: nn.Parameter
    training: bool

    def _init_fake_quant(self, bits: int, activation_bits: int | None, momentum: float) -> None:
        self.bits, self.activation_bits, self.momentum = bits, activation_bits, momentum
        # [min, max] of the inputs seen in training; ±inf until the first training batch.
        self.register_buffer("act_range", torch.tensor([math.inf, -math.inf]))  # type: ignore[attr-defined]

    def fake_weight(self) -> torch.Tensor:
        w = self.weight
        with torch.no_grad():
            q = fake_quant_per_channel(w.detach(), self.bits)
        return w + (q - w.detach())

    def fake_input(self, x: torch.Tensor) -> torch.Tensor:
        if self.activation_bits is None:
            return x
        r = self.act_range
        if self.training:
            with torch.no_grad():
                seen = torch.stack([x.detach().min(), x.detach().max()]).float()
                if torch.isfinite(r).all():
                    r.add_(self.momentum * (seen - r))
                else:
                    r.copy_(seen)
        if not torch.isfinite(r).all():
            return x
        with torch.no_grad():
            q = fake_quant_range(x.detach(), r[0], r[1], self.activation_bits)
        return x + (q - x.detach())

    def qat_args(self) -> dict[str, Any]:
        return {
            "bits": self.bits,
            "activation_bits": self.activation_bits,
            "momentum": self.momentum,
        }


class QATLinear(nn.Linear, _FakeQuant):
    """``nn.Linear`` with fake-quantized weight (per output channel) and input."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool,
        bits: int,
        activation_bits: int | None,
        momentum: float,
    ) -> None:
        super().__init__(in_features, out_features, bias)
        self._init_fake_quant(bits, activation_bits, momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(self.fake_input(x), self.fake_weight(), self.bias)


class QATConv2d(nn.Conv2d, _FakeQuant):
    """``nn.Conv2d`` with fake-quantized weight (per output channel) and input."""

    def __init__(
        self, conv: nn.Conv2d, bits: int, activation_bits: int | None, momentum: float
    ) -> None:
        super().__init__(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            conv.stride,
            conv.padding,
            conv.dilation,
            conv.groups,
            conv.bias is not None,
            conv.padding_mode,
        )
        self._init_fake_quant(bits, activation_bits, momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(self.fake_input(x), self.fake_weight(), self.bias)


def _qat_layer(layer: nn.Module, args: dict[str, Any]) -> nn.Module:
    """An untrained fake-quant twin of ``layer`` (weights not copied)."""
    activation_bits = args.get("activation_bits")
    if activation_bits is not None:
        activation_bits = int_arg(args, "activation_bits", 2, 8)
    momentum = args.get("momentum")
    if not isinstance(momentum, int | float) or isinstance(momentum, bool) or not 0 < momentum <= 1:
        raise PrunekitError(f"the swap record has momentum={momentum!r}; expected (0, 1]")
    settings = (int_arg(args, "bits", 2, 8), activation_bits, float(momentum))
    if isinstance(layer, nn.Conv2d):
        return QATConv2d(layer, *settings)
    out, k = linear_shape(layer)
    return QATLinear(k, out, getattr(layer, "bias", None) is not None, *settings)


def _qat_from(layer: nn.Module, config: QATConfig) -> nn.Module:
    args = {
        "bits": config.bits,
        "activation_bits": config.activation_bits,
        "momentum": config.momentum,
    }
    new = _qat_layer(layer, args)
    with torch.no_grad():
        new.weight.copy_(canonical(layer, layer.weight.detach()))
        if new.bias is not None:
            new.bias.copy_(layer.bias.detach())
    return new.to(layer.weight.device)


def _not_prepared(layer: nn.Module) -> str | None:
    if isinstance(layer, (QATLinear, QATConv2d)):
        return "already prepared for QAT"
    return None


@torch.no_grad()
def qat_(model: nn.Module, config: QATConfig, data: Any = None) -> QuantizeReport:
    """Swap the chosen Linear/Conv2d layers for fake-quantized ones (``quantize_`` with a
    ``QATConfig``)."""
    layers, skipped = choose_linears(
        model, config, kinds=(*linear_kinds(), nn.Conv2d), skip=_not_prepared
    )
    new = {name: _qat_from(layer, config) for name, layer in layers.items()}
    rows = [_qat_row(n, layers[n], m, config.bits) for n, m in new.items()]
    swap_all_(model, new, QAT_SWAP, {n: m.qat_args() for n, m in new.items()})
    return QuantizeReport(
        method=config.method, config=config.to_dict(), layers=rows, skipped=skipped
    )


def _qat_row(name: str, old: nn.Module, new: nn.Module, bits: int) -> LayerQuant:
    w = new.weight.detach()
    return LayerQuant(
        name,
        type(old).__name__,
        tuple(w.shape),
        bits,
        None,
        sqnr_db(w, fake_quant_per_channel(w, bits)),
        state_bytes(old),
        state_bytes(new),
    )


def prepare_qat_(model: nn.Module, config: QATConfig) -> QuantizeReport:
    """An alias of ``quantize_(model, config)`` for a :class:`QATConfig`, kept for its name:
    swap Linear/Conv2d layers for fake-quantized ones to train with ``prunekit.finetune_``, then
    :func:`convert_`. Returns ``quantize_``'s :class:`QuantizeReport`."""
    from prunekit.quantize.api import quantize_

    if not isinstance(config, QATConfig):
        raise TypeError(f"config: expected a QATConfig; got {type(config).__name__}")
    return quantize_(model, config)


@torch.no_grad()
def convert_(model: nn.Module) -> QuantizeReport:
    """Turn every fake-quantized layer of ``model`` into a real quantized one, in place:
    8-bit linears → ``Int8Linear`` (int8 kernel; activations quantized per batch), lower bits →
    ``WeightOnlyLinear`` (per-channel codes), convs → ``nn.Conv2d`` with the grid values.
    The weights land exactly on the grid training saw. Raises if the model has none."""
    qat = {n: m for n, m in model.named_modules() if isinstance(m, (QATLinear, QATConv2d))}
    if not qat:
        raise PrunekitError(
            "model has no fake-quantized layer; run prunekit.quantize_(model, QATConfig()) and "
            "train it first"
        )
    new: dict[str, tuple[nn.Module, str, dict[str, Any]]] = {}
    rows: list[LayerQuant] = []
    for name, layer in qat.items():
        if isinstance(layer, QATConv2d):
            conv = _plain_conv(layer, {})
            conv.weight.copy_(fake_quant_per_channel(layer.weight.detach(), layer.bits))
            if conv.bias is not None:
                conv.bias.copy_(layer.bias.detach())
            new[name] = (conv.to(layer.weight.device), CONVERTED_CONV_SWAP, {})
        elif layer.bits == 8:
            new[name] = (Int8Linear.from_layer(layer), INT8_SWAP, {})
        else:
            codes, grid = rtn_quantize(layer.weight.detach(), layer.bits, -1, True)
            m = WeightOnlyLinear.from_codes(layer, codes, grid, True)
            new[name] = (m, WEIGHT_ONLY_SWAP, weight_only_args(m))
        rows.append(layer_row(name, layer, new[name][0], layer.bits, None))
    with transaction(model):
        for name, (module, kind, args) in new.items():
            swap_all_(model, {name: module}, kind, {name: args})
    return QuantizeReport(method="qat-convert", config={}, layers=rows)


def _plain_conv(layer: nn.Module, args: dict[str, Any]) -> nn.Conv2d:
    c = layer
    return nn.Conv2d(
        c.in_channels,
        c.out_channels,
        c.kernel_size,
        c.stride,
        c.padding,
        c.dilation,
        c.groups,
        c.bias is not None,
        c.padding_mode,
    )


register_swap(QAT_SWAP, _qat_layer)
register_swap(CONVERTED_CONV_SWAP, _plain_conv)
