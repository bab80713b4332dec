"""One way to undo an edit: ``with transaction(model) as tx: ...`` puts the model back exactly
if the block raises.

What it restores: every module's parameters, buffers and children (the containers, so swapped
or rebuilt layers and tensors go back to the very objects that were there), every module's
plain attributes (sizes, head counts, flags, the structure and swap records a model carries),
and the *values* of the tensors the block declares it changes in place
(:meth:`Transaction.protect`, or ``values=True`` for all of them). Values are copied only on
request because a copy of every weight doubles a large model's memory; an edit that rebuilds
tensors (structured pruning, swaps, loading) never writes into the old ones and needs none.
Copies beyond ``memory_limit`` bytes (4 MiB by default) go to an unlinked temporary file
instead of memory: a language model whose every block is rewritten (SparseGPT, Wanda) would
otherwise hold a second copy of most of its weights for the whole call.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = ["Transaction", "transaction"]

_CONTAINERS = ("_parameters", "_buffers", "_modules")
MEMORY_LIMIT = 4 << 20


class Transaction:
    """The state of ``model`` when it was opened; :meth:`rollback` restores it."""

    def __init__(self, model: nn.Module, *, memory_limit: int = MEMORY_LIMIT) -> None:
        self.model = model
        self.memory_limit = memory_limit
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
        self._values: dict[int, tuple[torch.Tensor, torch.Tensor | _Spilled]] = {}
        self._in_memory = 0
        self._file: Any = None

    def protect(self, tensors: Iterable[torch.Tensor]) -> None:
        """Copy the values of ``tensors`` (once each) before the block writes into them: in
        memory up to ``memory_limit`` bytes in all, to a temporary file beyond it."""
        for t in tensors:
            if id(t) in self._values:
                continue
            nbytes = t.numel() * t.element_size()
            if self._in_memory + nbytes <= self.memory_limit:
                self._in_memory += nbytes
                self._values[id(t)] = (t, t.detach().clone())
            else:
                self._values[id(t)] = (t, self._spill(t))

    def _spill(self, t: torch.Tensor) -> _Spilled:
        if self._file is None:
            # Closed by close(): the file lives as long as the transaction.
            self._file = tempfile.TemporaryFile(prefix="prunekit-undo-")  # noqa: SIM115
        offset = self._file.seek(0, 2)
        raw = t.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
        self._file.write(raw.numpy().data)
        return _Spilled(offset, raw.numel(), t.dtype, tuple(t.shape))

    def _read(self, s: _Spilled) -> torch.Tensor:
        self._file.seek(s.offset)
        raw = torch.frombuffer(bytearray(self._file.read(s.nbytes)), dtype=torch.uint8)
        return raw.view(s.dtype).reshape(s.shape)

    def close(self) -> None:
        """Drop the copies (the temporary file is deleted); rollback is no longer possible."""
        if self._file is not None:
            self._file.close()
            self._file = None
        self._values.clear()

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
        for tensor, saved in self._values.values():
            value = self._read(saved) if isinstance(saved, _Spilled) else saved
            if tensor.shape != value.shape:  # resized in place (resize_/set_)
                tensor.set_(value.clone())
            else:
                tensor.copy_(value)


@dataclass(frozen=True)
class _Spilled:
    """Where one tensor's bytes lie in the transaction's temporary file."""

    offset: int
    nbytes: int
    dtype: torch.dtype
    shape: tuple[int, ...]


@contextlib.contextmanager
def transaction(
    model: nn.Module, *, values: bool = False, memory_limit: int = MEMORY_LIMIT
) -> Iterator[Transaction]:
    """Undo everything the block did to ``model`` if it raises (see the module docstring).
    ``values=True`` copies every tensor first; else call ``tx.protect(...)`` on the tensors
    written in place."""
    tx = Transaction(model, memory_limit=memory_limit)
    try:
        if values:
            tx.protect_all()
        yield tx
    except BaseException:
        tx.rollback()
        raise
    finally:
        tx.close()


def _own_tensors(module: nn.Module) -> Iterator[Any]:
    for container in (module._parameters, module._buffers):
        for t in container.values():
            if t is not None:
                yield t
