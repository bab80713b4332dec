"""Low-rank layers: a Linear or Conv2d replaced by two smaller layers in sequence.

``LowRankLinear`` holds ``first`` (``nn.Linear(in, rank, bias=False)``) and ``second``
(``nn.Linear(rank, out)`` with the original bias). ``LowRankConv2d`` holds ``first`` (no bias)
and ``second`` (the original bias): split by channel, the original kh×kw conv to ``rank``
channels with its stride, padding and dilation, then a 1×1 conv ``rank → out``; split
spatially, a kh×1 conv to ``rank`` channels carrying the vertical stride, padding and
dilation, then a 1×kw conv ``rank → out`` carrying the horizontal ones. Both parts are
ordinary torch layers: fine-tuning trains them, and pruning, quantization or sharing can
select them later.

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
    """``nn.Conv2d(in, out, (kh, kw))`` (groups=1) as two convolutions through ``rank``
    channels. Channel split: ``Conv2d(in, rank, (kh, kw))`` with the original stride, padding
    (and padding mode) and dilation, no bias, then ``Conv2d(rank, out, 1)``. Spatial split
    (``spatial=True``): ``Conv2d(in, rank, (kh, 1))`` with the vertical stride, padding and
    dilation, then ``Conv2d(rank, out, (1, kw))`` with the horizontal ones. Padding each axis
    in the conv that slides along it gives the original's output for every padding mode: the
    vertical conv works on each column alone, so it commutes with padding the columns."""

    def __init__(
        self,
        conv: nn.Conv2d,
        rank: int,
        bias: nn.Parameter | None,
        spatial: bool = False,
        **like: Any,
    ) -> None:
        """``like``: the factors' ``device`` and ``dtype``; their values are left uninitialised."""
        super().__init__()
        self.in_channels, self.out_channels, self.rank = conv.in_channels, conv.out_channels, rank
        self.spatial = spatial
        same = {"padding_mode": conv.padding_mode, "bias": False, **like}
        if not spatial:
            self.first = skip_init(
                nn.Conv2d, conv.in_channels, rank, conv.kernel_size, stride=conv.stride,
                padding=conv.padding, dilation=conv.dilation, **same,
            )  # fmt: skip
            self.second = skip_init(nn.Conv2d, rank, conv.out_channels, 1, bias=False, **like)
        else:
            (kh, kw), (sh, sw), (dh, dw) = conv.kernel_size, conv.stride, conv.dilation
            ph, pw = (conv.padding, conv.padding) if isinstance(conv.padding, str) else conv.padding
            self.first = skip_init(
                nn.Conv2d, conv.in_channels, rank, (kh, 1), stride=(sh, 1),
                padding=ph if isinstance(ph, str) else (ph, 0), dilation=(dh, 1), **same,
            )  # fmt: skip
            self.second = skip_init(
                nn.Conv2d, rank, conv.out_channels, (1, kw), stride=(1, sw),
                padding=pw if isinstance(pw, str) else (0, pw), dilation=(1, dw), **same,
            )  # fmt: skip
        self.second.register_parameter("bias", bias)

    def extra_repr(self) -> str:
        split = ", spatial" if self.spatial else ""
        return f"{self.in_channels}, {self.out_channels}, rank={self.rank}{split}"


def unsupported(layer: nn.Module) -> str | None:
    """Why ``layer`` cannot be factorized, or None when it can."""
    if type(layer) is nn.Linear:
        return None
    if type(layer) is nn.Conv2d and layer.groups == 1:
        return None
    if type(layer) is nn.Conv2d:
        return f"a grouped convolution (groups={layer.groups}): only groups=1 is factorized"
    return f"a {type(layer).__name__}; only nn.Linear and nn.Conv2d are factorized"


def is_spatial(layer: nn.Module, decomposition: str) -> bool:
    """Whether ``layer`` is split spatially: a Conv2d under ``decomposition="spatial"``."""
    return decomposition == "spatial" and isinstance(layer, nn.Conv2d)


def matrix(layer: nn.Module, spatial: bool = False) -> torch.Tensor:
    """The weight as the matrix the SVD factors: ``[out, in·kh·kw]``, or with ``spatial``
    ``[out·kw, in·kh]`` (row ``(o, x)``, column ``(i, y)`` holds ``w[o, i, y, x]``)."""
    w = layer.weight
    if not spatial:
        return w.reshape(w.shape[0], -1)
    out, cin, kh, kw = w.shape
    return w.permute(0, 3, 1, 2).reshape(out * kw, cin * kh)


def full_rank(layer: nn.Module, spatial: bool = False) -> int:
    """``min(rows, columns)`` of :func:`matrix`."""
    rows, cols = _matrix_shape(layer, spatial)
    return min(rows, cols)


def weight_params(layer: nn.Module, rank: int | None = None, spatial: bool = False) -> int:
    """Weight parameters of ``layer`` (``rank=None``) or of its rank-``rank`` factors:
    ``rank · (in·kh·kw + out)``, spatially ``rank · (in·kh + out·kw)``."""
    rows, cols = _matrix_shape(layer, spatial)
    return rows * cols if rank is None else rank * (rows + cols)


def _matrix_shape(layer: nn.Module, spatial: bool) -> tuple[int, int]:
    w = layer.weight
    if not spatial:
        return w.shape[0], w[0].numel()
    out, cin, kh, kw = w.shape
    return out * kw, cin * kh


def low_rank_like(
    layer: nn.Module,
    first: torch.Tensor | None,
    second: torch.Tensor | None,
    rank: int,
    spatial: bool = False,
) -> LowRankLayer:
    """The low-rank version of ``layer`` (an ``nn.Linear`` or a groups=1 ``nn.Conv2d``), using
    its bias. first: ``[rank, columns]``, second: ``[rows, rank]`` of :func:`matrix` (any float
    dtype; cast to the weight's), or None for zeros (``load`` fills them)."""
    assert unsupported(layer) is None, unsupported(layer)
    weight = layer.weight
    bias = layer.bias if isinstance(layer.bias, nn.Parameter) else None
    like = {"device": weight.device, "dtype": weight.dtype}
    new: LowRankLayer
    if isinstance(layer, nn.Linear):
        new = LowRankLinear(layer.in_features, layer.out_features, rank, bias, **like)
    else:
        new = LowRankConv2d(layer, rank, bias, spatial, **like)
    if spatial and second is not None:
        # [out·kw, rank] -> [out, rank, 1, kw]: row (o, x) feeds output o through column x.
        out, kw = weight.shape[0], weight.shape[3]
        second = second.reshape(out, kw, rank).permute(0, 2, 1)
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


def swap_args(layer: nn.Module, rank: int, spatial: bool = False) -> dict[str, Any]:
    """What the swap record stores to rebuild the low-rank layer (JSON-ready)."""
    args: dict[str, Any] = {"rank": rank, "layer": type(layer).__name__}
    if spatial:
        args["decomposition"] = "spatial"
    return args


def build(original: nn.Module, args: dict[str, Any]) -> nn.Module:
    """The swap builder: a low-rank layer shaped like ``original`` (factors zero, bias
    ``original``'s), for ``load`` to fill from the artifact's tensors."""
    layer = args.get("layer")
    if layer != type(original).__name__ or unsupported(original) is not None:
        raise PrunekitError(
            f"the artifact factorized a {layer!r} layer where the model has a "
            f"{type(original).__name__}; build the model the artifact was saved from"
        )
    decomposition = args.get("decomposition", "channel")
    if decomposition not in ("channel", "spatial"):
        raise PrunekitError(
            f"the artifact's low-rank record has decomposition={decomposition!r}; expected "
            f"'channel' or 'spatial': the file is damaged or from a newer prunekit"
        )
    spatial = is_spatial(original, decomposition)
    rank = swaps.int_arg(args, "rank", 1, full_rank(original, spatial))
    return low_rank_like(original, None, None, rank, spatial)


swaps.register_swap(SWAP_KIND, build)
