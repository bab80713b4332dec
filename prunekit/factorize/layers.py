"""Low-rank layers: a Linear or Conv2d replaced by two smaller layers in sequence.

``LowRankLinear`` holds ``first`` (``nn.Linear(in, rank, bias=False)``) and ``second``
(``nn.Linear(rank, out)`` with the original bias); ``LowRankConv2d`` holds ``first`` (the
original k×k conv to ``rank`` channels, its stride, padding and dilation, no bias) and
``second`` (a 1×1 conv ``rank → out`` with the original bias). Both parts are ordinary torch
layers: fine-tuning trains them, and pruning, quantization or sharing can select them later.

The swap kind ``"low-rank"`` is registered with :mod:`prunekit.surgery.swaps`, so ``load``
rebuilds these layers from the original ones before loading their tensors.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.utils import skip_init

from prunekit.errors import PrunekitError
from prunekit.surgery import swaps

SWAP_KIND = "low-rank"


class LowRankLayer(nn.Module):
    """Base of the low-rank layers: ``second(first(x))``; ``rank`` the width between them."""

    first: nn.Module
    second: nn.Module
    rank: int

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(self.first(x))


class LowRankLinear(LowRankLayer):
    """``nn.Linear(in, out)`` as ``Linear(in, rank, bias=False)`` then ``Linear(rank, out)``."""

    def __init__(
        self, in_features: int, out_features: int, rank: int, bias: nn.Parameter | None, **like: Any
    ) -> None:
        """``like``: the factors' ``device`` and ``dtype``; their values are left uninitialised."""
        super().__init__()
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.first = skip_init(nn.Linear, in_features, rank, bias=False, **like)
        self.second = skip_init(nn.Linear, rank, out_features, bias=False, **like)
        self.second.register_parameter("bias", bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}"


class LowRankConv2d(LowRankLayer):
    """``nn.Conv2d(in, out, k)`` (groups=1) as ``Conv2d(in, rank, k)`` with the original
    stride, padding (and padding mode) and dilation, no bias, then ``Conv2d(rank, out, 1)``."""

    def __init__(self, conv: nn.Conv2d, rank: int, bias: nn.Parameter | None, **like: Any) -> None:
        """``like``: the factors' ``device`` and ``dtype``; their values are left uninitialised."""
        super().__init__()
        self.in_channels, self.out_channels, self.rank = conv.in_channels, conv.out_channels, rank
        self.first = skip_init(
            nn.Conv2d,
            conv.in_channels,
            rank,
            conv.kernel_size,
            stride=conv.stride,
            padding=conv.padding,
            dilation=conv.dilation,
            bias=False,
            padding_mode=conv.padding_mode,
            **like,
        )
        self.second = skip_init(nn.Conv2d, rank, conv.out_channels, 1, bias=False, **like)
        self.second.register_parameter("bias", bias)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, rank={self.rank}"


def unsupported(layer: nn.Module) -> str | None:
    """Why ``layer`` cannot be factorized, or None when it can."""
    if type(layer) is nn.Linear:
        return None
    if type(layer) is nn.Conv2d and layer.groups == 1:
        return None
    if type(layer) is nn.Conv2d:
        return f"a grouped convolution (groups={layer.groups}): only groups=1 is factorized"
    return f"a {type(layer).__name__}; only nn.Linear and nn.Conv2d are factorized"


def full_rank(layer: nn.Module) -> int:
    """``min(out, in)`` of the weight as a matrix ``[out, in·kh·kw]``."""
    w = layer.weight
    return min(w.shape[0], w[0].numel())


def weight_params(layer: nn.Module, rank: int | None = None) -> int:
    """Weight parameters of ``layer`` (``rank=None``) or of its rank-``rank`` factors:
    ``rank · (in·kh·kw + out)``."""
    w = layer.weight
    out, inner = w.shape[0], w[0].numel()
    return out * inner if rank is None else rank * (inner + out)


def low_rank_like(
    layer: nn.Module, first: torch.Tensor | None, second: torch.Tensor | None, rank: int
) -> LowRankLayer:
    """The low-rank version of ``layer`` (an ``nn.Linear`` or a groups=1 ``nn.Conv2d``), using
    its bias. first: ``[rank, in·kh·kw]``, second: ``[out, rank]`` (any float dtype; cast to
    the weight's), or None for zeros (``load`` fills them)."""
    assert unsupported(layer) is None, unsupported(layer)
    weight = layer.weight
    bias = layer.bias if isinstance(layer.bias, nn.Parameter) else None
    like = {"device": weight.device, "dtype": weight.dtype}
    new: LowRankLayer
    if isinstance(layer, nn.Linear):
        new = LowRankLinear(layer.in_features, layer.out_features, rank, bias, **like)
    else:
        new = LowRankConv2d(layer, rank, bias, **like)
    # Only the factors are new: the bias stays the original Parameter, as sharing keeps it.
    with torch.no_grad():
        for part, value in ((new.first, first), (new.second, second)):
            target = part.weight
            if value is None:
                target.zero_()
            else:
                target.copy_(value.reshape(target.shape))
            target.requires_grad_(weight.requires_grad)  # a frozen layer stays frozen
    return new.train(layer.training)


def swap_args(layer: nn.Module, rank: int) -> dict[str, Any]:
    """What the swap record stores to rebuild the low-rank layer (JSON-ready)."""
    return {"rank": rank, "layer": type(layer).__name__}


def build(original: nn.Module, args: dict[str, Any]) -> nn.Module:
    """The swap builder: a low-rank layer shaped like ``original`` (factors zero, bias
    ``original``'s), for ``load`` to fill from the artifact's tensors."""
    layer = args.get("layer")
    if layer != type(original).__name__ or unsupported(original) is not None:
        raise PrunekitError(
            f"the artifact factorized a {layer!r} layer where the model has a "
            f"{type(original).__name__}; build the model the artifact was saved from"
        )
    rank = swaps.int_arg(args, "rank", 1, full_rank(original))
    return low_rank_like(original, None, None, rank)


swaps.register_swap(SWAP_KIND, build)
