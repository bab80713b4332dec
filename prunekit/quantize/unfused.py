"""Keep ignored layers out of the fusions torch runs on a static-int8 region.

torch.ao's ``prepare_fx`` and torch.fx's BatchNorm folding match fusion patterns by module type
(Conv2d → BatchNorm2d → ReLU, Linear → ReLU, …), never by name, so a layer named in ``ignore``
would still be fused: kept in float, yet renamed and with its BatchNorm folded into its weights.
While a region is fused, each ignored layer is therefore hidden inside a :class:`Kept` shell,
which no pattern names and which tracing leaves whole; afterwards the layer itself is put back
under its own name.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from torch import fx, nn


class Kept(nn.Module):
    """An ignored layer, hidden from fusion; calls it unchanged."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.layer(*args, **kwargs)


class KeptTracer(fx.Tracer):
    """torch.fx's tracer that records a :class:`Kept` shell as one call, not its inside."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, Kept) or super().is_leaf_module(m, module_qualified_name)


def hide_(root: nn.Module, names: Collection[str]) -> None:
    """Wrap each submodule of ``root`` named in ``names`` in a :class:`Kept` shell, in place."""
    for name in names:
        root.set_submodule(name, Kept(root.get_submodule(name)))


def restore_(root: nn.Module, names: Collection[str]) -> None:
    """Undo :func:`hide_` on ``root`` (or on a graph traced from it): each shell gives way to
    the layer it holds, under the same name."""
    for name in names:
        shell = root.get_submodule(name)
        assert isinstance(shell, Kept), f"{name} was hidden before fusing"
        root.set_submodule(name, shell.layer)
