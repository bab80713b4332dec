"""Which norms feed nothing but linear layers, and how large each of their output channels gets.

SmoothQuant divides a norm's output channels by ``s`` and multiplies the matching weight columns
of its readers by ``s``. That is exact only when every reader of the norm's output is such a
layer: in a pre-norm block (LLaMA's ``input_layernorm`` → q/k/v) it is; in a post-norm block
(BERT: the LayerNorm output is also the residual that the next add reads) a scaled output would
change the residual stream. So the readers are found by watching one real forward pass rather
than from module names: a module hook notes which layer takes a norm's output tensor as its input,
and a ``TorchFunctionMode`` notes every other torch operation that reads it (an add, a slice, a
view) or whether the model returns it. torch.fx cannot trace most Hugging Face models, and the
structured-pruning graph follows channels, not tensor readers; this pass works on any model that
runs.

Only reads the model: hooks and the mode are always removed.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from prunekit.calibrate import calibration_forward
from prunekit.data.batches import split_batch


def is_norm(module: nn.Module) -> bool:
    """LayerNorm/RMSNorm (torch's, or a model's own class named so) with a 1-D ``weight``.
    Whether a scale really folds into it is checked numerically before folding."""
    if not isinstance(module, nn.LayerNorm | nn.RMSNorm) and not type(module).__name__.endswith(
        ("LayerNorm", "RMSNorm")
    ):
        return False
    weight = getattr(module, "weight", None)
    return isinstance(weight, nn.Parameter) and weight.dim() == 1


@dataclass(frozen=True)
class NormUse:
    """Who reads one norm's output. ``readers``: layers taking it as their input;
    ``other``: the first other operation reading it (None: only the readers do);
    ``sample``: one input of the norm and its output, for checking a fold numerically."""

    readers: tuple[str, ...]
    other: str | None
    sample: tuple[torch.Tensor, torch.Tensor]


class _Watch(TorchFunctionMode):
    """Records torch operations, outside the reader layers, that read a watched tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.watched: dict[int, tuple[str, torch.Tensor]] = {}  # id → (norm, the tensor itself)
        self.other: dict[str, str] = {}
        self.depth = 0  # > 0 while a reader layer runs: its own operations are the reading

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.depth == 0 and self.watched:
            # Metadata (shape, size, dim) reads no values: only operations returning tensors do.
            results = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
            for norm in self.owners((args, kwargs)) if results else ():
                # An op handing back its input itself (eval-mode dropout) passes it on unread.
                if not any(self.watched.get(id(t), ("", None))[1] is t for t in results):
                    self.other.setdefault(norm, getattr(func, "__name__", str(func)))
        return out

    def owners(self, tree: Any) -> Iterator[str]:
        for leaf in tree_flatten(tree)[0]:
            hit = self.watched.get(id(leaf)) if isinstance(leaf, torch.Tensor) else None
            if hit is not None and hit[1] is leaf:
                yield hit[0]


@torch.no_grad()
def norm_uses(
    model: nn.Module, inputs: Any, norms: dict[str, nn.Module], layers: dict[str, nn.Module]
) -> dict[str, NormUse]:
    """For each of ``norms`` that runs on ``inputs`` (one batch's inputs), who reads its output
    among ``layers`` and whether anything else does. A norm called more than once is reported
    as read by something else (one scale cannot serve two different calls)."""
    watch = _Watch()
    readers: dict[str, list[str]] = {n: [] for n in norms}
    samples: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def norm_done(name: str, _: nn.Module, args: tuple[Any, ...], out: Any) -> None:
        if name in samples:
            watch.other.setdefault(name, "a second call of the norm")
        if isinstance(out, torch.Tensor) and args and isinstance(args[0], torch.Tensor):
            samples[name] = (args[0], out)
            watch.watched[id(out)] = (name, out)

    def reader_in(name: str, _: nn.Module, args: tuple[Any, ...]) -> None:
        for norm in watch.owners(args):
            readers[norm].append(name)
        watch.depth += 1

    def reader_out(*_: Any) -> None:
        watch.depth -= 1

    hooks = []
    try:
        for name, norm in norms.items():
            hooks.append(norm.register_forward_hook(_bind(norm_done, name)))
        for name, layer in layers.items():
            hooks.append(layer.register_forward_pre_hook(_bind(reader_in, name)))
            hooks.append(layer.register_forward_hook(reader_out))
        with watch:
            out = calibration_forward(model, inputs)
        for norm in watch.owners(out if isinstance(out, tuple) else _values(out)):
            watch.other.setdefault(norm, "the model's output")
    finally:
        for h in hooks:
            h.remove()
    return {
        name: NormUse(tuple(dict.fromkeys(readers[name])), watch.other.get(name), samples[name])
        for name in norms
        if name in samples
    }


def _values(out: Any) -> Any:
    # Hugging Face ModelOutput is a dict subclass; pytree does not flatten it by itself.
    return list(out.values()) if isinstance(out, dict) else out


def _bind(fn: Any, name: str) -> Any:
    return lambda *a: fn(name, *a)


@torch.no_grad()
def channel_max(
    model: nn.Module, batches: Iterable[Any], norms: dict[str, nn.Module]
) -> dict[str, torch.Tensor]:
    """``{norm: max |output| per channel [C]}`` over ``batches`` (every token, padding included:
    int8-dynamic's per-batch range sees those too)."""
    found: dict[str, torch.Tensor] = {}

    def record(name: str, _: nn.Module, __: Any, out: Any) -> None:
        if isinstance(out, torch.Tensor):
            m = out.detach().abs().reshape(-1, out.shape[-1]).amax(dim=0).float()
            found[name] = m if name not in found else torch.maximum(found[name], m)

    hooks = [norm.register_forward_hook(_bind(record, n)) for n, norm in norms.items()]
    try:
        for batch in batches:
            calibration_forward(model, split_batch(batch)[0])
    finally:
        for h in hooks:
            h.remove()
    return found
