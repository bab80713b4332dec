"""Codebook layers: a Linear or Conv whose weight is gathered from a trainable codebook.

A shared layer stores ``codebook`` (a parameter, ``[2**bits]``), ``indices`` (an integer buffer
of the original weight's shape, 0 = pruned exact zero, ``k > 0`` = ``codebook[k - 1]``) and the
original ``bias``. Its forward gathers the weight and calls the original layer's functional op,
so training moves the shared values (gradients summed per cluster) while the assignment of
weights to clusters and the zeros stay fixed. ``weight`` is a read-only property: code that
reads ``layer.weight`` (``nn.MultiheadAttention`` reads its ``out_proj.weight``) keeps working.

The swap kind ``"shared"`` is registered with :mod:`prunekit.swaps`, so ``load`` rebuilds these
layers from the original ones before loading their tensors.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from prunekit.errors import PrunekitError
from prunekit.layout import is_transposed
from prunekit.share.config import MAX_BITS, MIN_BITS
from prunekit.share.kmeans import decode, index_dtype, index_order
from prunekit.surgery import swaps

SWAP_KIND = "shared"
CONV_TYPES: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONV_OPS = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


class SharedLayer(nn.Module):
    """Base of the codebook layers: ``codebook`` ``[2**bits]``, ``indices`` (the original
    weight's shape), ``bias``; ``weight`` gathered from them."""

    codebook: nn.Parameter
    indices: torch.Tensor
    derived_weight = True  # selectable by layer kind although ``weight`` is no Parameter

    def __init__(
        self, codebook: torch.Tensor, indices: torch.Tensor, bias: nn.Parameter | None, bits: int
    ) -> None:
        super().__init__()
        assert codebook.shape == (2**bits,) and indices.dtype == index_dtype(bits)
        self.bits = bits
        self.codebook = nn.Parameter(codebook)
        self.register_buffer("indices", indices)
        self.register_parameter("bias", bias)

    def state_problem(self, state: dict[str, torch.Tensor]) -> str | None:
        """What in ``state`` (this layer's tensors, about to be loaded) the forward could not
        use: indices outside 0..codebook size (``prunekit.load`` asks before loading)."""
        indices, codebook = state.get("indices"), state.get("codebook")
        if indices is None or codebook is None or not indices.numel():
            return None
        low, high = int(indices.min()), int(indices.max())
        if low < 0 or high > codebook.numel():
            return (
                f"codebook indices span {low}..{high} but the codebook has "
                f"{codebook.numel()} entries"
            )
        return None

    @property
    def weight(self) -> torch.Tensor:
        """The weight (the original layer's shape and layout), gathered from the codebook.

        While gradients are on it is gathered on every access, so the codebook trains. Without
        them (inference) the gathered weight is kept until the codebook or the indices change
        (``swaps.state_versions``, as the int8 layers keep their packed weight):
        gathering it on every forward made LeNet-300-100 12x slower at batch 1 than the dense
        model. The copy costs the dense weight's memory; the state_dict stays codebook +
        indices."""
        if torch.is_grad_enabled() and self.codebook.requires_grad:
            # The indices stay fixed while the codebook trains: their sort order is kept.
            key = swaps.state_versions(self.indices)
            order = self.__dict__.get("_order")
            if order is None or order[0] != key:
                order = (key, index_order(self.indices, self.codebook.numel()), self.indices)
                self.__dict__["_order"] = order
            return decode(self.codebook, self.indices, order[1])
        key = swaps.state_versions(self.codebook, self.indices)
        cached = self.__dict__.get("_decoded")
        if cached is None or cached[0] != key:
            with torch.no_grad():
                cached = (key, decode(self.codebook, self.indices))
            self.__dict__["_decoded"] = cached
        return cached[1]


class SharedLinear(SharedLayer):
    """A shared ``nn.Linear`` (``indices: [out, in]``) or transformers ``Conv1D``
    (``transposed``: ``indices: [in, out]``, forward ``x @ W + b`` as Conv1D computes it)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        codebook: torch.Tensor,
        indices: torch.Tensor,
        bias: nn.Parameter | None,
        bits: int,
        transposed: bool = False,
    ) -> None:
        super().__init__(codebook, indices, bias, bits)
        self.in_features, self.out_features, self.transposed = in_features, out_features, transposed

    @property
    def weight_transposed(self) -> bool:
        """``weight`` is stored ``[in, out]`` (as the Conv1D it replaced); see layout."""
        return self.transposed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.transposed:
            return F.linear(x, self.weight, self.bias)
        rows = x.reshape(-1, x.shape[-1])
        y = rows @ self.weight if self.bias is None else torch.addmm(self.bias, rows, self.weight)
        return y.view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        layout = ", transposed=True" if self.transposed else ""
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bits={self.bits}, bias={self.bias is not None}{layout}"
        )


class SharedConv(SharedLayer):
    """A shared ``nn.Conv1d/2d/3d``: same stride, padding (and padding mode), dilation, groups."""

    def __init__(
        self,
        conv: nn.Module,
        codebook: torch.Tensor,
        indices: torch.Tensor,
        bias: nn.Parameter | None,
        bits: int,
    ) -> None:
        super().__init__(codebook, indices, bias, bits)
        self.dims = conv.weight.dim() - 2
        for attr in ("in_channels", "out_channels", "kernel_size", "stride", "padding",
                     "dilation", "groups", "padding_mode"):  # fmt: skip
            setattr(self, attr, getattr(conv, attr))
        # What nn.ConvNd pads with when padding_mode is not "zeros" (F.pad's argument order).
        self.pad_amounts = list(conv._reversed_padding_repeated_twice)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        op = _CONV_OPS[self.dims]
        if self.padding_mode != "zeros":
            x = F.pad(x, self.pad_amounts, mode=self.padding_mode)
            return op(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)
        return op(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, groups={self.groups}, "
            f"bits={self.bits}, bias={self.bias is not None}"
        )


def is_conv(layer: nn.Module) -> bool:
    """A convolution (``conv_bits`` applies); transformers' Conv1D is a linear layer."""
    return isinstance(layer, CONV_TYPES)


def check_shareable(name: str, layer: nn.Module) -> None:
    """PrunekitError unless ``layer``'s weight is floating-point (one a quantizer replaced by
    integers has nothing left to cluster)."""
    weight = getattr(layer, "weight", None)
    if not isinstance(weight, torch.Tensor) or not weight.is_floating_point():
        raise PrunekitError(
            f"targets: {name!r} has no floating-point weight to share (already quantized?); "
            f"leave it out with ignore=[{name!r}]"
        )


def shared_like(
    layer: nn.Module, codebook: torch.Tensor, indices: torch.Tensor, bits: int
) -> SharedLayer:
    """The shared version of ``layer`` (a Linear, Conv or transformers Conv1D), using its bias.

    codebook: ``[2**bits]``; indices: ``layer.weight``'s shape, dtype :func:`index_dtype`.
    """
    bias = layer.bias if isinstance(getattr(layer, "bias", None), nn.Parameter) else None
    shared: SharedLayer
    if is_transposed(layer):
        nx, nf = layer.weight.shape
        shared = SharedLinear(nx, nf, codebook, indices, bias, bits, transposed=True)
    elif isinstance(layer, nn.Linear):
        shared = SharedLinear(layer.in_features, layer.out_features, codebook, indices, bias, bits)
    elif isinstance(layer, CONV_TYPES):
        shared = SharedConv(layer, codebook, indices, bias, bits)
    else:
        raise TypeError(f"cannot share a {type(layer).__name__}")
    shared.codebook.requires_grad_(layer.weight.requires_grad)  # a frozen layer stays frozen
    return shared


def swap_args(layer: nn.Module, bits: int) -> dict[str, Any]:
    """What the swap record stores to rebuild the shared layer (JSON-ready)."""
    return {"bits": bits, "layer": type(layer).__name__}


def build(original: nn.Module, args: dict[str, Any]) -> nn.Module:
    """The swap builder: a shared layer shaped like ``original`` (codebook and indices zero,
    bias ``original``'s), for ``load`` to fill from the artifact's tensors."""
    bits, layer = args.get("bits"), args.get("layer")
    if not isinstance(bits, int) or not MIN_BITS <= bits <= MAX_BITS:
        raise PrunekitError(
            f"the artifact's shared layer has bits={bits!r}; expected {MIN_BITS}..{MAX_BITS}"
        )
    if layer != type(original).__name__:
        raise PrunekitError(
            f"the artifact shared a {layer!r} layer where the model has a "
            f"{type(original).__name__}; build the model the artifact was saved from"
        )
    weight = original.weight
    codebook = torch.zeros(2**bits, dtype=weight.dtype, device=weight.device)
    indices = torch.zeros(weight.shape, dtype=index_dtype(bits), device=weight.device)
    return shared_like(original, codebook, indices, bits)


swaps.register_swap(SWAP_KIND, build)
