"""Module swaps: a layer replaced by a compressed version, recorded so ``load`` can rebuild it.

Weight sharing swaps a Linear for one that stores a codebook and indices; quantization swaps it
for one that stores int8 weights and scales. A swapped-in module keeps all its state in plain
parameters and buffers (so safetensors can store it, no pickle), and its kind is registered with
a builder that makes it again from the original layer and the recorded ``args``. The model
carries the list of swaps it went through; ``prunekit.artifact.io`` writes it into the manifest and
replays it on a freshly built model before loading the tensors.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from prunekit.errors import PrunekitError, quote

SWAPS_ATTR = "_prunekit_swaps"
# Set by structured pruning (``prunekit.surgery.shrink``); read here by name so that
# this low-level module imports nothing above it.
_STRUCTURE_ATTR = "_prunekit_structure"


def state_versions(*tensors: torch.Tensor | None) -> tuple[Any, ...]:
    """A key that changes when a swapped layer's state does, for layers that keep something
    derived from it (a packed int8 weight, a gathered codebook weight): the exact tensor objects
    (``.to()`` and ``load_state_dict`` with ``assign`` replace them) and their in-place versions.
    Inference tensors carry no version counter; they cannot change in place outside inference
    mode, so their identity is enough."""
    try:
        return tuple(None if t is None else (id(t), t._version) for t in tensors)
    except RuntimeError:
        return tuple(None if t is None else id(t) for t in tensors)


def int_arg(args: dict[str, Any], key: str, low: int, high: int, default: Any = None) -> int:
    """``args[key]`` (a swap record's value, from a manifest that may be damaged or hostile)
    checked to be an integer in ``[low, high]`` before a builder sizes anything by it."""
    value = args.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        shown = repr(value)
        shown = shown if len(shown) <= 40 else shown[:40] + "…"
        raise PrunekitError(
            f"the swap record has {key}={shown}; expected an integer in {low}..{high}; the "
            f"artifact is corrupted"
        )
    return value


Builder = Callable[[nn.Module, dict[str, Any]], nn.Module]
_BUILDERS: dict[str, Builder] = {}


def register_swap(kind: str, build: Builder) -> None:
    """``build(original_layer, args)`` returns the swapped-in module (weights not yet loaded)."""
    if kind in _BUILDERS and _BUILDERS[kind] is not build:
        raise RuntimeError(f"swap kind {kind!r} is registered twice")
    _BUILDERS[kind] = build


def swap_record(model: nn.Module) -> list[dict[str, Any]]:
    """The swaps ``model`` went through, in order: ``[{module, kind, args}]`` (JSON-ready)."""
    return list(model.__dict__.get(SWAPS_ATTR, []))


def swap_(
    model: nn.Module, name: str, new: nn.Module, kind: str, args: dict[str, Any]
) -> nn.Module:
    """Put ``new`` in place of the submodule ``name``; record it. Returns the old module.

    On a structurally pruned model the record also keeps the shapes of the layer replaced
    (``shapes``: its state_dict names → shape): the builders size the swapped-in layer from
    the original one, and ``load`` must give the freshly built dense original those pruned
    shapes first (:func:`original_shapes`)."""
    if kind not in _BUILDERS:
        raise RuntimeError(f"swap kind {kind!r} has no registered builder")
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    old = getattr(parent, child)
    entry: dict[str, Any] = {"module": name, "kind": kind, "args": dict(args)}
    if model.__dict__.get(_STRUCTURE_ATTR) and not any(
        e["module"] == name for e in swap_record(model)
    ):
        entry["shapes"] = {k: list(v.shape) for k, v in old.state_dict().items()}
    setattr(parent, child, new)
    model.__dict__[SWAPS_ATTR] = [*swap_record(model), entry]
    return old


def replay_swaps_(model: nn.Module, record: list[dict[str, Any]]) -> None:
    """Apply recorded swaps to a freshly built model (tensors are loaded afterwards)."""
    _load_builtin_swaps()
    for entry in record:
        kind, name = entry.get("kind"), entry.get("module")
        if kind not in _BUILDERS:
            raise PrunekitError(
                f"the artifact swaps {quote(name)} for a {quote(kind)} module, which this "
                f"prunekit version does not know; known: {', '.join(sorted(_BUILDERS)) or 'none'}"
            )
        try:
            original = model.get_submodule(name)
        except AttributeError:
            raise PrunekitError(
                f"the artifact swaps module {quote(name)}, which the model does not have"
            ) from None
        swap_(model, name, _BUILDERS[kind](original, entry.get("args") or {}), kind,
              entry.get("args") or {})  # fmt: skip


def _load_builtin_swaps() -> None:
    # The packages that define swapped-in modules register their builders on import.
    import importlib

    for package in (
        "prunekit.share",
        "prunekit.factorize",
        "prunekit.quantize",
        "prunekit.accelerate",
    ):
        try:
            importlib.import_module(package)
        except ModuleNotFoundError as e:
            if e.name != package:
                raise
