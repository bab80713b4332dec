"""Per-channel scales moved between a norm and the layers reading its output (SmoothQuant).

``norm(x) / s`` feeds layers whose weight columns are multiplied by ``s``: the product is the
same, nothing is added at run time, and the model keeps its modules and state names (so save,
load and export see an ordinary model with other weights).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import nn

from prunekit.layout import canonical


def folded_tensors(norm: nn.Module, readers: Sequence[nn.Module]) -> Iterator[torch.Tensor]:
    """The tensors :func:`fold_input_scales_` writes in place (for ``Transaction.protect``)."""
    yield norm.weight
    if getattr(norm, "bias", None) is not None:
        yield norm.bias
    for layer in readers:
        yield layer.weight


@torch.no_grad()
def fold_input_scales_(norm: nn.Module, readers: Sequence[nn.Module], s: torch.Tensor) -> None:
    """Divide the norm's affine weight (and bias) by ``s [C]`` and multiply each reader's input
    columns by it. Callers run inside ``surgery.transaction`` with :func:`folded_tensors`
    protected."""
    norm.weight.div_(s.to(norm.weight.dtype))
    if getattr(norm, "bias", None) is not None:
        norm.bias.div_(s.to(norm.bias.dtype))
    for layer in readers:
        # canonical() is a view: [out, in] whichever way the layer stores its weight.
        canonical(layer, layer.weight).mul_(s.to(layer.weight.dtype))
