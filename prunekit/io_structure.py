"""The artifact of a structurally pruned model: its structure record, replayed on load.

Structured pruning rebuilds layers smaller and logs every module attribute it changes
(``prunekit.prune.structured.shrink.structure_record``). ``save`` writes that record into the
manifest; ``load`` builds the dense architecture, gives it the saved shapes and attributes with
``replay_`` and only then loads the weights. A Hugging Face model's ``config.json`` also gets the
widths it can express (every FFN equally wide; every attention layer with the same head count
when the config fixes ``head_dim``), and the manifest says whether that config alone rebuilds the
model, i.e. whether ``from_pretrained`` opens the folder without prunekit.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunekit.errors import PrunekitError
from prunekit.prune.structured.shrink import STRUCTURE_ATTR, replay_, shrinkers, structure_record

# Config keys holding the FFN width, by model family (GPT-2 ``n_inner``, OPT ``ffn_dim``, T5
# ``d_ff``, DistilBERT ``hidden_dim``, Whisper ``encoder_ffn_dim``).
FFN_KEYS = ("intermediate_size", "n_inner", "ffn_dim", "d_ff", "hidden_dim", "encoder_ffn_dim",
            "decoder_ffn_dim")  # fmt: skip
HEADS, KV_HEADS = "num_attention_heads", "num_key_value_heads"

Layout = tuple[dict[str, tuple[int, ...]], dict[tuple[str, str], Any]]


def record_of(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The structure record in a manifest (empty for a model that was not structurally pruned)."""
    structure = manifest.get("structure") or {}
    record = structure.get("record") if isinstance(structure, dict) else None
    if record is None:
        return []
    if not isinstance(record, list) or not all(
        isinstance(e, dict) and {"module", "attr", "value"} <= e.keys() for e in record
    ):
        raise PrunekitError("manifest.json: structure.record is malformed; re-save the model")
    return record


# --------------------------------------------------------------------------- loading


@contextlib.contextmanager
def restored_on_error(model: nn.Module, record: list[dict[str, Any]]) -> Iterator[None]:
    """Put every module's tensors and the recorded attributes back if the block raises."""
    modules = dict(model.named_modules(remove_duplicate=False))
    tensors = [(m, dict(m._parameters), dict(m._buffers)) for m in modules.values()]
    attrs = [
        (modules[e["module"]], e["attr"], getattr(modules[e["module"]], e["attr"])) for e in record
    ]
    had_record = STRUCTURE_ATTR in model.__dict__
    old_record = model.__dict__.get(STRUCTURE_ATTR)
    try:
        yield
    except BaseException:
        for module, params, buffers in tensors:
            module._parameters.clear()
            module._parameters.update(params)
            module._buffers.clear()
            module._buffers.update(buffers)
        for module, attr, value in reversed(attrs):
            setattr(module, attr, value)
        if had_record:
            model.__dict__[STRUCTURE_ATTR] = old_record
        else:
            model.__dict__.pop(STRUCTURE_ATTR, None)
        raise


def check_record_fits(model: nn.Module, record: list[dict[str, Any]], path: Path) -> None:
    """Every module and attribute the record names exists in ``model``."""
    modules = dict(model.named_modules(remove_duplicate=False))
    for entry in record:
        module = modules.get(entry["module"])
        if module is None or not hasattr(module, entry["attr"]):
            where = entry["module"] or "the model"
            raise PrunekitError(
                f"{path}: the artifact was pruned from a model where {where} has "
                f"{entry['attr']!r}; the model passed has no such module or attribute; pass "
                f"the architecture it was saved from"
            )


def replay(model: nn.Module, shapes: dict[str, list[int]], record: list[dict[str, Any]]) -> None:
    """Give ``model`` the saved shapes (zero placeholders) and the recorded attributes."""
    replay_(model, {name: tuple(shape) for name, shape in shapes.items()}, record)


def check_consistent(model: nn.Module, path: Path) -> None:
    """Each layer's size attributes agree with its tensors' shapes, after a replay.

    A tensor the replay resized without its layer being told (no record entry) means the model
    passed is not the architecture the artifact was pruned from."""
    for name, module in model.named_modules():
        for kind, shrinker in shrinkers():
            if not isinstance(module, kind):
                continue
            current = {k: v for k, v in vars(module).items() if isinstance(v, int | tuple)}
            try:
                implied = shrinker(module, current)
            except (AttributeError, KeyError, TypeError, ValueError):
                break  # a layer without the tensors its shrinker reads (no affine, lazy)
            for attr, value in implied.items():
                if current.get(attr) != value:
                    raise PrunekitError(
                        f"{path}: layer {name!r} ({type(module).__name__}) has {attr}="
                        f"{current.get(attr)!r} but the artifact's tensors imply {value!r}; the "
                        f"model passed is not the architecture the artifact was pruned from"
                    )
            break


# --------------------------------------------------------------------------- saving


def pruned_builtin_source(model: nn.Module) -> dict[str, Any] | None:
    """``{"kind": "builtin", …}`` when ``model`` is a structurally pruned registered example
    model: its dense architecture with the model's record replayed has the model's shapes."""
    record = structure_record(model)
    if not record:
        return None
    from prunekit.models.registry import available, build, model_info

    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    for name in available():
        info = model_info(name)
        if info.factory is not type(model):
            continue
        fresh = build(name)
        if fresh.state_dict().keys() != shapes.keys():
            continue
        try:
            replay_(fresh, shapes, record)
            check_consistent(fresh, Path(name))
        except (PrunekitError, AttributeError, KeyError, TypeError):
            continue
        return {"kind": "builtin", "name": name, "kwargs": {}, "dataset": info.data_spec()}
    return None


def hf_config_updates(model: nn.Module) -> tuple[dict[str, Any], bool]:
    """``(updates, complete)``: the config keys that express the pruned model's widths, and
    whether the config with them rebuilds every shape and size attribute (so ``from_pretrained``
    loads the saved folder directly). Each update is kept only if everything it changes in the
    built architecture matches the pruned model."""
    # Attributes the forward never reads can be stale after surgery (LlamaMLP.intermediate_size);
    # the recorded ones are those that matter, with every shape.
    recorded = {(e["module"], e["attr"]) for e in structure_record(model)}
    target = _layout(model, recorded)
    config = copy.deepcopy(model.config)  # type: ignore[attr-defined]
    current = _built_layout(type(model), config, recorded)
    if current is None:
        return {}, False
    updates: dict[str, Any] = {}
    for candidates in (_ffn_edits, _head_edits):
        for edit in candidates(config, current, target):
            trial = copy.deepcopy(config)
            for key, value in edit.items():
                setattr(trial, key, value)
            layout = _built_layout(type(model), trial, recorded)
            if layout is not None and _moves_toward(current, layout, target):
                config, current = trial, layout
                updates.update(edit)
                break
    return updates, current == target


def _layout(model: nn.Module, attrs: set[tuple[str, str]]) -> Layout:
    modules = dict(model.named_modules(remove_duplicate=False))
    return (
        {k: tuple(v.shape) for k, v in model.state_dict().items()},
        {(m, a): getattr(modules[m], a, None) if m in modules else None for m, a in attrs},
    )


def _built_layout(cls: type, config: Any, attrs: set[tuple[str, str]]) -> Layout | None:
    # On the meta device: shapes and attributes without allocating or initialising weights.
    try:
        with torch.device("meta"):
            return _layout(cls(config), attrs)
    except Exception:  # an architecture that cannot be built from this config at all
        return None


def _moves_toward(current: Layout, trial: Layout, target: Layout) -> bool:
    if trial[0].keys() != current[0].keys() or trial[1].keys() != current[1].keys():
        return False
    changed = 0
    for now, new, want in zip(current, trial, target, strict=True):
        for key, value in new.items():
            if value != now[key]:
                if value != want.get(key):
                    return False
                changed += 1
    return changed > 0


def _changed_dims(current: Layout, target: Layout) -> list[tuple[int, int]]:
    """(size in the built model, size in the pruned one) of every dimension that differs."""
    out = []
    for name, shape in current[0].items():
        want = target[0].get(name)
        if want is not None and len(want) == len(shape):
            out += [(a, b) for a, b in zip(shape, want, strict=True) if a != b]
    return out


def _ffn_edits(config: Any, current: Layout, target: Layout) -> Iterator[dict[str, int]]:
    explicit = config.to_dict()
    for key in FFN_KEYS:
        if key not in explicit:
            continue
        old = explicit[key]
        sizes = {b for a, b in _changed_dims(current, target) if old is None or a == old}
        for size in sorted(sizes):
            yield {key: size}


def _head_edits(config: Any, current: Layout, target: Layout) -> Iterator[dict[str, int]]:
    # Only a config that fixes head_dim keeps the head size when the head count changes.
    explicit = config.to_dict()
    head_dim, heads = explicit.get("head_dim"), explicit.get(HEADS)
    if not isinstance(head_dim, int) or not isinstance(heads, int) or head_dim <= 0:
        return
    kv = explicit.get(KV_HEADS)
    dims = _changed_dims(current, target)

    def counts(old: int) -> set[int]:
        return {b // head_dim for a, b in dims if a == old * head_dim and b % head_dim == 0}

    for q in sorted(counts(heads)):
        if not isinstance(kv, int):
            yield {HEADS: q}
            continue
        for k in sorted({kv} | counts(kv)):
            yield {HEADS: q, KV_HEADS: k}
