"""One way to undo an edit: ``with transaction(model) as tx: ...`` puts the model back exactly
if the block raises.

What it restores: every module's parameters, buffers and children (the containers, so swapped
or rebuilt layers and tensors go back to the very objects that were there), every module's
plain attributes (sizes, head counts, flags, the structure and swap records a model carries),
and the *values* of the tensors the block declares it changes in place
(:meth:`Transaction.protect`, or ``values=True`` for all of them). Values are copied only on
request because a copy of every weight doubles a large model's memory; an edit that rebuilds
tensors (structured pruning, swaps, loading) never writes into the old ones and needs none.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn

__all__ = ["Transaction", "transaction"]

_CONTAINERS = ("_parameters", "_buffers", "_modules")


class Transaction:
    """The state of ``model`` when it was opened; :meth:`rollback` restores it."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self._modules = list(model.modules())
        self._containers = [
            (container, dict(container))
            for m in self._modules
            for container in (getattr(m, name) for name in _CONTAINERS)
        ]
        self._attrs = [
            (m, {k: v for k, v in vars(m).items() if k not in _CONTAINERS}) for m in self._modules
        ]
        # Lists and dicts (records, hook tables) can change in place: their contents are kept
        # too, and put back into the same objects (hook handles refer to those).
        self._contents = [
            (v, list(v) if isinstance(v, list) else dict(v))
            for _, attrs in self._attrs
            for v in attrs.values()
            if isinstance(v, list | dict)
        ]
        self._values: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def protect(self, tensors: Iterable[torch.Tensor]) -> None:
        """Copy the values of ``tensors`` (once each) before the block writes into them."""
        for t in tensors:
            if id(t) not in self._values:
                self._values[id(t)] = (t, t.detach().clone())

    def protect_all(self) -> None:
        """Copy every parameter and buffer (for an edit that trains or rewrites them all)."""
        self.protect(t for m in self._modules for t in _own_tensors(m))

    @torch.no_grad()
    def rollback(self) -> None:
        for container, saved in self._containers:
            container.clear()
            container.update(saved)
        for module, saved in self._attrs:
            for key in [k for k in vars(module) if k not in _CONTAINERS and k not in saved]:
                del module.__dict__[key]  # state the block added (caches, records)
            module.__dict__.update(saved)
        for obj, contents in self._contents:
            obj.clear()
            if isinstance(obj, list):
                obj.extend(contents)
            else:
                obj.update(contents)
        for tensor, value in self._values.values():
            if tensor.shape != value.shape:  # resized in place (resize_/set_)
                tensor.set_(value.clone())
            else:
                tensor.copy_(value)


@contextlib.contextmanager
def transaction(model: nn.Module, *, values: bool = False) -> Iterator[Transaction]:
    """Undo everything the block did to ``model`` if it raises (see the module docstring).
    ``values=True`` copies every tensor first; else call ``tx.protect(...)`` on the tensors
    written in place."""
    tx = Transaction(model)
    if values:
        tx.protect_all()
    try:
        yield tx
    except BaseException:
        tx.rollback()
        raise


def _own_tensors(module: nn.Module) -> Iterator[Any]:
    for container in (module._parameters, module._buffers):
        for t in container.values():
            if t is not None:
                yield t
