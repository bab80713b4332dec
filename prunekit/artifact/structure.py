"""The artifact of a structurally pruned model: its structure record, replayed on load.

(The swap record of ``prunekit.surgery.swaps`` is replayed in the same pass, :func:`rebuild_`;
both are undone together when loading fails.)

Structured pruning rebuilds layers smaller and logs every module attribute it changes
(``prunekit.surgery.shrink.structure_record``). ``save`` writes that record into the
manifest; ``load`` builds the dense architecture, gives it the saved shapes and attributes with
``replay_`` and only then loads the weights. A Hugging Face model's ``config.json`` also gets the
widths it can express (every FFN equally wide; every attention layer with the same head count
when the config fixes ``head_dim``), and the manifest says whether that config alone rebuilds the
model, i.e. whether ``from_pretrained`` opens the folder without prunekit.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunekit.errors import PrunekitError, quote
from prunekit.surgery.shrink import (
    HEAD_COUNT_ATTRS,
    SIZE_ATTRS,
    implied_shapes,
    replay_,
    shrinkers,
    structure_record,
)
from prunekit.surgery.swaps import replay_swaps_, swap_record

# Config keys holding the FFN width, by model family (GPT-2 ``n_inner``, OPT ``ffn_dim``, T5
# ``d_ff``, DistilBERT ``hidden_dim``, Whisper ``encoder_ffn_dim``), and other inner widths that
# channel pruning narrows (Whisper's classifier projection, SegFormer's decode head).
FFN_KEYS = ("intermediate_size", "n_inner", "ffn_dim", "d_ff", "hidden_dim", "encoder_ffn_dim",
            "decoder_ffn_dim", "classifier_proj_size", "decoder_hidden_size")  # fmt: skip
HEADS, KV_HEADS = "num_attention_heads", "num_key_value_heads"
# Config keys holding the hidden (residual-stream) width, and the head counts that derive the
# head size from it where the config does not fix head_dim.
HIDDEN_KEYS = ("hidden_size", "n_embd", "d_model", "dim", "embed_dim", "word_embed_proj_dim",
               "embedding_size", "hidden_sizes")  # fmt: skip
HEAD_KEYS = (HEADS, "n_head", "n_heads", "num_heads", "encoder_attention_heads", KV_HEADS)
HEAD_SIZE_ATTRS = ("head_dim", "head_size", "attention_head_size", "dim_per_head")
# Module attributes holding a query or key/value head count (what head pruning records).
HEAD_ATTRS = {"num_heads": HEADS, "num_attention_heads": HEADS, "n_head": HEADS,
              "n_heads": HEADS, "num_key_value_heads": KV_HEADS, "num_kv_heads": KV_HEADS,
              "n_kv_heads": KV_HEADS}  # fmt: skip

Layout = tuple[dict[str, tuple[int, ...]], dict[tuple[str, str], Any]]


def record_of(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The structure record in a manifest (empty for a model that was not structurally pruned)."""
    structure = manifest.get("structure") or {}
    record = structure.get("record") if isinstance(structure, dict) else None
    if record is None:
        return []
    if not isinstance(record, list) or not all(
        isinstance(e, dict)
        and {"module", "attr", "value"} <= e.keys()
        and isinstance(e["module"], str)
        and isinstance(e["attr"], str)
        for e in record
    ):
        raise PrunekitError("manifest.json: structure.record is malformed; re-save the model")
    return record


# --------------------------------------------------------------------------- loading


def rebuild_(
    model: nn.Module,
    shapes: dict[str, Any],
    record: list[dict[str, Any]],
    swaps: list[dict[str, Any]],
    path: Path,
) -> None:
    """Give a freshly built dense ``model`` the saved structure and swapped layers, in one pass.

    ``shapes``: the saved tensors' shapes by state_dict name. The tensors of a swapped layer are
    named after the swapped-in module (``indices``, ``codebook``…), so the shapes of the layer it
    replaced come from the swap record (:func:`original_shapes`): every layer has its pruned
    shapes before any builder sizes a swapped-in layer from it. The model's tensors are zero
    placeholders afterwards, to be filled by ``load_state_dict``."""
    swapped = [e["module"] for e in swaps]
    if record:
        dense = {**outside(shapes, swapped), **original_shapes(model, swaps, record, path)}
        replay(model, dense, record, path)
    if swaps:
        try:
            replay_swaps_(model, swaps)
        except PrunekitError as e:
            raise PrunekitError(f"{path}: {e}") from None
        except (AttributeError, KeyError, TypeError, ValueError, IndexError, RuntimeError) as e:
            # A builder handed args it cannot use: the manifest is damaged or from another
            # version.
            raise PrunekitError(
                f"{path}: cannot rebuild the swapped-in layers ({type(e).__name__}: "
                f"{str(e)[:200]}); the artifact is corrupted or was written by another prunekit "
                f"version"
            ) from None
    if record:
        check_consistent(model, path)


def original_shapes(
    model: nn.Module, swaps: list[dict[str, Any]], record: list[dict[str, Any]], path: Path
) -> dict[str, tuple[int, ...]]:
    """State_dict name → shape of each layer as it was when first swapped (after pruning).

    From the swap record's ``shapes``; records written before prunekit kept them (0.1) get the
    shapes the replayed size attributes imply (Linear, Conv, BatchNorm, Conv1D layers)."""
    modules = dict(model.named_modules(remove_duplicate=False))
    out: dict[str, tuple[int, ...]] = {}
    seen: set[str] = set()
    for entry in swaps:
        name = entry["module"]
        if name in seen:
            continue  # a later swap of the same layer: sized by the earlier swap's builder
        seen.add(name)
        prefix = f"{name}." if name else ""
        saved = entry.get("shapes")
        if saved is not None:
            if not isinstance(saved, dict) or not all(
                isinstance(v, list) and all(isinstance(d, int) and d >= 0 for d in v)
                for v in saved.values()
            ):
                raise PrunekitError(f"{path}: swaps[{quote(name)}].shapes is malformed; re-save it")
            out.update({prefix + k: tuple(v) for k, v in saved.items()})
            continue
        layer = modules.get(name)
        if layer is None:
            continue  # reported by the swap replay
        for sub, module in layer.named_modules(prefix=name):
            attrs = {k: v for k, v in vars(module).items() if isinstance(v, int | tuple)}
            for e in record:
                if e["module"] == sub:
                    value = e["value"]
                    attrs[e["attr"]] = tuple(value) if isinstance(value, list) else value
            try:
                implied = implied_shapes(module, attrs)
            except (KeyError, TypeError, ZeroDivisionError):
                continue
            out.update({(f"{sub}." if sub else "") + k: v for k, v in implied.items()})
    return out


def check_record_fits(model: nn.Module, record: list[dict[str, Any]], path: Path) -> None:
    """Every module and attribute the record names exists in ``model``, and every recorded
    value is a size: surgery records only layer sizes and head counts, each at most the dense
    model's (pruning only removes), so a record setting anything else (``forward``,
    ``__class__``, a Flatten's ``start_dim``, a convolution's ``padding``) or growing a layer
    is damaged, never replayed."""
    modules = dict(model.named_modules(remove_duplicate=False))
    for entry in record:
        module = modules.get(entry["module"])
        if module is None or not hasattr(module, entry["attr"]):
            name = entry["module"]
            where = (name if len(name) <= 80 else name[:79] + "…") or "the model"
            raise PrunekitError(
                f"{path}: the artifact was pruned from a model where {where} has "
                f"{quote(entry['attr'])}; the model passed has no such module or attribute; pass "
                f"the architecture it was saved from"
            )
        current, value = getattr(module, entry["attr"]), entry["value"]
        recorded = entry["attr"] in SIZE_ATTRS or entry["attr"] in HEAD_COUNT_ATTRS
        if not recorded or not _pruned_size(value, current):
            raise PrunekitError(
                f"{path}: the structure record sets {quote(entry['module'] + '.' + entry['attr'])}"
                f" to {quote(value)}, which is not a layer size; the artifact is corrupted"
            )


def _pruned_size(value: Any, dense: Any) -> bool:
    """Whether ``value`` (from JSON) is a size a pruned layer can have where the dense one has
    ``dense``: a non-negative integer no larger, or such a list for a tuple."""

    def size(v: Any, limit: Any) -> bool:
        is_int = isinstance(v, int) and not isinstance(v, bool)
        return is_int and isinstance(limit, int) and not isinstance(limit, bool) and 0 <= v <= limit

    if isinstance(dense, tuple):
        return (
            isinstance(value, list)
            and len(value) == len(dense)
            and all(size(v, d) for v, d in zip(value, dense, strict=True))
        )
    return size(value, dense)


def replay(
    model: nn.Module, shapes: dict[str, list[int]], record: list[dict[str, Any]], path: Path
) -> None:
    """Give ``model`` the saved shapes (zero placeholders) and the recorded attributes.

    Pruning only removes, so a saved shape larger than the dense model's in any dimension means
    a damaged artifact or the wrong model; it is refused before any placeholder is allocated."""
    state = model.state_dict()
    for name, shape in shapes.items():
        dense = state.get(name)
        if dense is not None and (
            len(shape) != dense.dim() or any(a > b for a, b in zip(shape, dense.shape, strict=True))
        ):
            raise PrunekitError(
                f"{path}: tensor {quote(name)} has shape {quote(list(shape))} in the artifact, "
                f"not a pruned {list(dense.shape)} of the model's; pass the architecture it was "
                f"saved from"
            )
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


def changed_builtin_source(model: nn.Module) -> dict[str, Any] | None:
    """``{"kind": "builtin", …}`` when ``model`` is a registered example model changed by
    structured pruning or layer swaps: its dense architecture with the model's structure and
    swap records replayed has the model's tensor names and shapes."""
    record, swaps = structure_record(model), swap_record(model)
    if not record and not swaps:
        return None
    from prunekit.models.registry import available, build, model_info

    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    for name in available():
        info = model_info(name)
        if info.factory is not type(model):
            continue
        fresh = build(name)
        try:
            rebuild_(fresh, shapes, record, swaps, Path(name))
        except (PrunekitError, AttributeError, KeyError, TypeError, ValueError, RuntimeError):
            continue
        if {k: tuple(v.shape) for k, v in fresh.state_dict().items()} == shapes:
            return {"kind": "builtin", "name": name, "kwargs": {}, "dataset": info.data_spec()}
    return None


def outside(tensors: dict[str, Any], modules: list[str]) -> dict[str, Any]:
    """The entries of ``tensors`` (by state_dict name) that belong to none of ``modules``."""
    prefixes = tuple(f"{m}." if m else "" for m in modules)
    if "" in prefixes:
        return {}
    return {n: v for n, v in tensors.items() if not n.startswith(prefixes)}


def hf_config_updates(model: nn.Module) -> tuple[dict[str, Any], bool]:
    """``(updates, complete)``: the config keys that express the pruned model's widths, and
    whether the config with them rebuilds every shape and size attribute (so ``from_pretrained``
    loads the saved folder directly). Each update is kept only if everything it changes in the
    built architecture matches the pruned model."""
    # Attributes the forward never reads can be stale after surgery (LlamaMLP.intermediate_size);
    # the recorded ones are those that matter, with every shape.
    recorded = {(e["module"], e["attr"]) for e in structure_record(model)}
    # The head size too: a config can rebuild every shape with the heads cut differently (4
    # heads of 4 where the model has 2 of 8).
    recorded |= {
        (name, attr)
        for name, m in model.named_modules()
        for attr in HEAD_SIZE_ATTRS
        if isinstance(getattr(m, attr, None), int)
    }
    target = _layout(model, recorded)
    config = copy.deepcopy(model.config)  # type: ignore[attr-defined]
    current = _built_layout(type(model), config, recorded)
    if current is None:
        return {}, False
    # First the edits that rebuild the model exactly, together: one tensor can change in several
    # dimensions (an attention projection narrows in the hidden width and in the head count).
    edits = [
        [{}, *gen(config, current, target)] for gen in (_ffn_edits, _hidden_edits, _head_edits)
    ]
    for parts in itertools.product(*edits):
        edit = {k: v for part in parts for k, v in part.items()}
        if not edit:
            continue
        trial = _edited(config, edit)
        if trial is not None and _built_layout(type(model), trial, recorded) == target:
            return edit, True
    updates: dict[str, Any] = {}
    for candidates in (_ffn_edits, _hidden_edits, _head_edits):
        for edit in candidates(config, current, target):
            trial = _edited(config, edit)
            layout = None if trial is None else _built_layout(type(model), trial, recorded)
            if layout is not None and _moves_toward(current, layout, target):
                config, current = trial, layout
                updates.update(edit)
                break
    return updates, current == target


def hidden_tied_dims(model: nn.Module, widths: Iterable[int]) -> dict[tuple[str, int], int]:
    """``{(parameter, dim): width}``: the dimensions a Hugging Face config ties to one of the
    hidden ``widths`` (BERT's pooler, sized by ``hidden_size``). Probed by building the
    architecture on the meta device with the config's hidden-width keys at that width doubled
    (doubling keeps it divisible by the head counts): a tied dimension doubles with them. Empty
    for a model without a Hugging Face config or one that cannot be rebuilt."""
    config = getattr(model, "config", None)
    if config is None or not callable(getattr(model, "save_pretrained", None)):
        return {}
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    explicit = config.to_dict()
    out: dict[tuple[str, int], int] = {}
    for width in sorted(set(widths)):
        edit: dict[str, Any] = {}
        for key in HIDDEN_KEYS:
            value = explicit.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value == width:
                edit[key] = 2 * width
            elif isinstance(value, list) and width in value:
                edit[key] = [2 * v if v == width else v for v in value]
        trial = _edited(config, edit) if edit else None
        built = None if trial is None else _built_layout(type(model), trial, set())
        if built is None:
            continue
        for name, shape in built[0].items():
            old = shapes.get(name, ())
            if len(old) != len(shape):
                continue
            for d, (a, b) in enumerate(zip(old, shape, strict=True)):
                if a == width and b == 2 * width:
                    out[(name, d)] = width
    return out


def _edited(config: Any, edit: dict[str, Any]) -> Any:
    trial = copy.deepcopy(config)
    try:
        for key, value in edit.items():
            setattr(trial, key, value)
    except (AttributeError, TypeError, ValueError):  # a derived, read-only key (Falcon head_dim)
        return None
    return trial


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
    options: list[list[dict[str, int]]] = []
    for key in FFN_KEYS:
        if key not in explicit:
            continue
        old = explicit[key]
        sizes = {b for a, b in _changed_dims(current, target) if old is None or a == old}
        if sizes:
            options.append([{key: size} for size in sorted(sizes)])
    # Each key alone first (the greedy search takes them one by one), then together (Whisper's
    # FFN and classifier projection both narrowed).
    for one in options:
        yield from one
    if len(options) > 1:
        for parts in itertools.product(*options):
            yield {k: v for part in parts for k, v in part.items()}


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


def _hidden_edits(config: Any, current: Layout, target: Layout) -> Iterator[dict[str, Any]]:
    """The hidden-width keys set to the pruned widths, fullest edit first: every such key
    together (OPT's ``word_embed_proj_dim`` moves with ``hidden_size``), with the head counts
    the pruned attention layers have (the head size is hidden / heads where the config does not
    fix it), then with ``head_dim`` set to the unpruned head size (LLaMA-style configs read it)."""
    explicit = config.to_dict()
    widths: dict[int, set[int]] = {}
    for a, b in _changed_dims(current, target):
        widths.setdefault(a, set()).add(b)

    def narrowed(value: Any) -> list[Any]:
        if isinstance(value, int) and not isinstance(value, bool):
            return sorted(widths.get(value, ()))
        ints = isinstance(value, list) and value and all(isinstance(v, int) for v in value)
        if ints and all(len(widths.get(v, ())) == 1 for v in value):
            return [[next(iter(widths[v])) for v in value]]
        return []

    options = {k: narrowed(explicit[k]) for k in HIDDEN_KEYS if k in explicit}
    keys = [k for k, v in options.items() if v]
    if not keys:
        return
    heads = [{}, *_head_counts(explicit, current, target)]
    head_dim: list[dict[str, Any]] = [{}]
    if "head_dim" not in explicit:
        hidden, count = explicit.get(keys[0]), explicit.get(HEADS, explicit.get("n_head"))
        if isinstance(hidden, int) and isinstance(count, int) and count > 0:
            head_dim.append({"head_dim": hidden // count})
    for size in range(len(keys), 0, -1):
        for subset in itertools.combinations(keys, size):
            for values in itertools.product(*(options[k] for k in subset)):
                for extra in head_dim:
                    for h in reversed(heads):
                        yield {**dict(zip(subset, values, strict=True)), **h, **extra}


def _head_counts(explicit: dict[str, Any], current: Layout, target: Layout) -> list[dict[str, Any]]:
    """The config's head counts scaled as head pruning scaled the modules' (one fraction per
    kind, query or key/value, or nothing)."""
    fractions: dict[str, set[float]] = {}
    for (module, attr), value in target[1].items():
        kind, old = HEAD_ATTRS.get(attr), current[1].get((module, attr))
        if kind and isinstance(value, int) and isinstance(old, int) and old > 0:
            fractions.setdefault(kind, set()).add(value / old)
    if not fractions:
        # Nothing records a head count (the forward reads it from the shapes): try the ratios
        # by which widths shrank; the built model's head sizes tell a wrong guess.
        ratios = {b / a for a, b in _changed_dims(current, target) if a}
        return [e for r in sorted(ratios) for e in _head_counts_at(explicit, {HEADS: {r}})]
    return _head_counts_at(explicit, fractions)


def _head_counts_at(explicit: dict[str, Any], fractions: dict[str, set[float]]) -> list[dict]:
    if any(len(f) != 1 for f in fractions.values()):
        return []
    edit: dict[str, Any] = {}
    for key in HEAD_KEYS:
        value = explicit.get(key)
        kind = KV_HEADS if key == KV_HEADS and KV_HEADS in fractions else HEADS
        f = next(iter(fractions.get(kind, {1.0})))
        if isinstance(value, int) and not isinstance(value, bool):
            edit[key] = round(value * f)
        elif isinstance(value, list) and all(isinstance(v, int) for v in value):
            edit[key] = [round(v * f) for v in value]
    return [edit] if edit else []
