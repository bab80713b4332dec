"""Quantized layers swapped in for Linear (and transformers' Conv1D), with plain-tensor state.

Every layer here keeps its state in ordinary buffers and parameters (int8/uint8 codes, float
scales, a float bias) so safetensors stores it, and has a builder registered with
:func:`prunekit.surgery.swaps.register_swap` that makes an empty one from the original layer and its
JSON args; ``load`` then fills it with ``load_state_dict``.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from prunekit.errors import PrunekitError
from prunekit.layout import canonical
from prunekit.quantize.grid import (
    GroupGrid,
    dequantize_groups,
    int8_per_channel,
    pack_codes,
    packed_width,
    unpack_codes,
)
from prunekit.surgery.swaps import int_arg, register_swap, state_versions

INT8_SWAP = "int8-dynamic"
WEIGHT_ONLY_SWAP = "weight-only"
MIN_BITS, MAX_BITS = 2, 8  # what WeightOnlyConfig accepts and the code packing stores


def linear_shape(layer: nn.Module) -> tuple[int, int]:
    """``(out_features, in_features)`` of a Linear or Conv1D, from its weight's canonical view."""
    out, k = canonical(layer, layer.weight).shape
    return int(out), int(k)


def _needs_reduced_range() -> bool:
    """fbgemm's kernels for CPUs without VNNI add pairs of uint8×int8 products in int16, which
    full-range activations can overflow, so they get 7 bits; with VNNI (``vpdpbusd``) products
    accumulate in int32 exactly and activations keep all 8 bits (on MiniLM: 1 − cosine to fp32
    0.021 with 7 bits, 0.006 with 8)."""
    check = getattr(torch.cpu, "_is_vnni_supported", None)
    return True if check is None else not check()


class Int8Linear(nn.Module):
    """``y = x Wᵀ + b`` with W int8 per output channel and x quantized per batch to uint8
    (7 bits on CPUs without VNNI, see :func:`_needs_reduced_range`), by
    ``torch.ops.quantized.linear_dynamic``; CPU only.

    State: ``qweight`` int8 ``[out, in]``, ``scale`` float32 ``[out]``, ``bias`` ``[out]`` or
    None. The kernel's packed form is built from them on first use and rebuilt whenever one of
    them changes (``load_state_dict``, ``.to()``).
    """

    # Decided on the machine that runs the model, not stored: the weights are the same either way.
    reduce_range = _needs_reduced_range()

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("qweight", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("scale", torch.ones(out_features, dtype=torch.float32))
        zeros = nn.Parameter(torch.zeros(out_features), requires_grad=False) if bias else None
        self.register_parameter("bias", zeros)
        self._packed: tuple[tuple[Any, ...], Any, tuple[Any, ...]] | None = None

    @classmethod
    def from_layer(cls, layer: nn.Module) -> Int8Linear:
        """Quantize a Linear/Conv1D's weight (its bias stays float32)."""
        out, k = linear_shape(layer)
        new = cls(k, out, bias=getattr(layer, "bias", None) is not None)
        q, scale = int8_per_channel(canonical(layer, layer.weight.detach()))
        new.qweight.copy_(q)
        new.scale.copy_(scale)
        if new.bias is not None:
            new.bias.data.copy_(layer.bias.detach().float())
        return new

    @property
    def weight(self) -> torch.Tensor:
        """The dequantized weight ``[out, in]`` (computed on each access; for code that reads
        ``.weight.dtype`` or inspects the values)."""
        return self.qweight.float() * self.scale[:, None]

    def packed(self) -> Any:
        """fbgemm's packed weight (cached while the state tensors are unchanged)."""
        versions = state_versions(self.qweight, self.scale, self.bias)
        if self._packed is None or self._packed[0] != versions:
            with warnings.catch_warnings():
                # torch deprecates quantized tensors in favour of torchao, whose int8 CPU path
                # ran ≈18× slower here; the kernel itself is what we want.
                warnings.simplefilter("ignore", UserWarning)
                zero = torch.zeros(self.out_features, dtype=torch.long)
                qw = torch._make_per_channel_quantized_tensor(
                    self.qweight.cpu(), self.scale.cpu().double(), zero, 0
                )
                bias = None if self.bias is None else self.bias.detach().float().cpu()
                # Holding the tensors keeps their ids from being reused while cached.
                held = (self.qweight, self.scale, self.bias)
                self._packed = (versions, torch.ops.quantized.linear_prepack(qw, bias), held)
        return self._packed[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32:
            return torch.ops.quantized.linear_dynamic(x, self.packed(), self.reduce_range)
        y = torch.ops.quantized.linear_dynamic(x.float(), self.packed(), self.reduce_range)
        return y.to(x.dtype)

    def __getstate__(self) -> dict[str, Any]:
        # The packed form is a C++ object; copies rebuild it from the state tensors.
        state = self.__dict__.copy()
        state["_packed"] = None
        return state

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, int8 per-channel weights, dynamic int8 activations"
        )


class WeightOnlyLinear(nn.Module):
    """``y = x Ŵᵀ + b`` with Ŵ dequantized from bit-packed low-bit codes on each call.

    State: ``codes`` uint8 ``[out, ceil(in·bits/8)]``, ``scales`` float16 ``[out, G]``,
    ``zeros`` uint8 ``[out, G]`` (asymmetric grids only; symmetric ones use 2^(bits−1)),
    ``bias`` ``[out]`` or None. G = ceil(in / group_size).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bits: int,
        group_size: int,
        symmetric: bool,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.bits, self.group_size, self.symmetric = bits, group_size, symmetric
        groups = -(-in_features // group_size)
        width = packed_width(in_features, bits)
        self.register_buffer("codes", torch.zeros(out_features, width, dtype=torch.uint8))
        self.register_buffer("scales", torch.ones(out_features, groups, dtype=torch.float16))
        if not symmetric:
            self.register_buffer("zeros", torch.zeros(out_features, groups, dtype=torch.uint8))
        zeros = nn.Parameter(torch.zeros(out_features), requires_grad=False) if bias else None
        self.register_parameter("bias", zeros)

    @classmethod
    def from_codes(
        cls, layer: nn.Module, codes: torch.Tensor, grid: GroupGrid, symmetric: bool
    ) -> WeightOnlyLinear:
        """From a layer and its codes ``uint8 [out, in]`` on ``grid``."""
        out, k = linear_shape(layer)
        has_bias = getattr(layer, "bias", None) is not None
        new = cls(k, out, grid.bits, grid.group_size, symmetric, bias=has_bias)
        new.codes.copy_(pack_codes(codes, grid.bits))
        new.scales.copy_(grid.scales.half())
        if not symmetric:
            new.zeros.copy_(grid.zeros.to(torch.uint8))
        if new.bias is not None:
            new.bias.data.copy_(layer.bias.detach().float())
        return new

    @property
    def weight(self) -> torch.Tensor:
        """The dequantized weight ``[out, in]``, float32."""
        codes = unpack_codes(self.codes, self.bits, self.in_features)
        if self.symmetric:
            zeros = torch.full_like(self.scales, 2 ** (self.bits - 1), dtype=torch.uint8)
        else:
            zeros = self.zeros
        return dequantize_groups(codes, self.scales, zeros, self.group_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.weight.to(x.dtype), bias)

    def extra_repr(self) -> str:
        grid = "symmetric" if self.symmetric else "asymmetric"
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, bits={self.bits}, group_size={self.group_size}, "
            f"{grid}"
        )


def _build_int8(layer: nn.Module, args: dict[str, Any]) -> nn.Module:
    out, k = linear_shape(layer)
    return Int8Linear(k, out, bias=getattr(layer, "bias", None) is not None)


def _build_weight_only(layer: nn.Module, args: dict[str, Any]) -> nn.Module:
    out, k = linear_shape(layer)
    symmetric = args.get("symmetric")
    if not isinstance(symmetric, bool):
        raise PrunekitError(f"the swap record has symmetric={symmetric!r}; expected true/false")
    return WeightOnlyLinear(
        k,
        out,
        int_arg(args, "bits", MIN_BITS, MAX_BITS),
        int_arg(args, "group_size", 1, 1 << 31),  # beyond in_features: one group
        symmetric,
        bias=getattr(layer, "bias", None) is not None,
    )


def weight_only_args(module: WeightOnlyLinear) -> dict[str, Any]:
    """The JSON args that rebuild ``module``'s shapes (for the swap record)."""
    return {"bits": module.bits, "group_size": module.group_size, "symmetric": module.symmetric}


register_swap(INT8_SWAP, _build_int8)
register_swap(WEIGHT_ONLY_SWAP, _build_weight_only)
