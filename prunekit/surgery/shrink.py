"""Structural surgery: rebuild parameters smaller and update the modules that own them.

The only structured-pruning code that edits a model. Tensors are sliced generically (every
parameter or buffer, along any dimension, tied weights kept tied); then one small *shrinker* per
module type updates the attributes its forward reads (``in_features``, ``groups``, a head count).
Nothing is written into an existing tensor, so ``surgery.transaction`` puts the model back
exactly when verification fails; every attribute change goes into the model's structure record,
so ``prunekit.load`` can rebuild the shapes without pickle.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from prunekit.layout import conv1d_type

STRUCTURE_ATTR = "_prunekit_structure"

# Attributes attention modules read at forward time, scaled with the fraction of heads kept.
HEAD_COUNT_ATTRS = (
    "num_heads", "num_attention_heads", "n_head", "n_heads", "num_key_value_heads",
    "num_kv_heads", "n_kv_heads", "all_head_size", "split_size", "inner_dim",
)  # fmt: skip


def structure_record(model: nn.Module) -> list[dict[str, Any]]:
    """The attribute changes structured pruning made, in order: ``[{module, attr, value}]``."""
    return list(getattr(model, STRUCTURE_ATTR, []))


def shrink_(
    model: nn.Module, removed: dict[str, dict[int, np.ndarray]], head_fraction: dict[str, float]
) -> None:
    """Remove ``removed[name][dim]`` indices from each parameter/buffer ``name``.

    head_fraction: attention module name → fraction of its heads kept (head counts scale).
    New tensors replace the old ones (never written in place), so a :func:`transaction`
    around the call puts the model back exactly.
    """
    tensors = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    owners: dict[int, list[tuple[nn.Module, str, str]]] = defaultdict(list)
    names = dict(model.named_modules(remove_duplicate=False))
    for module in names.values():
        for pname, p in module._parameters.items():
            if p is not None:
                owners[id(p)].append((module, "_parameters", pname))
        for bname, b in module._buffers.items():
            if b is not None:
                owners[id(b)].append((module, "_buffers", bname))
    old_attrs = {name: _attrs(m) for name, m in names.items()}
    touched: set[str] = set()
    with torch.no_grad():
        for name, dims in removed.items():
            old = tensors[name]
            new = old.detach()
            for d, idx in sorted(dims.items()):
                keep = np.setdiff1d(np.arange(new.shape[d]), idx)
                new = new.index_select(d, torch.as_tensor(keep, device=new.device))
            new = new.clone()
            if isinstance(old, nn.Parameter):
                new = nn.Parameter(new, requires_grad=old.requires_grad)
            for module, container, attr in owners[id(old)]:
                getattr(module, container)[attr] = new
            owning = {id(o[0]) for o in owners[id(old)]}
            touched.update(n for n, m in names.items() if id(m) in owning)
    log = structure_record(model)

    def update(mname: str, attr: str, value: Any) -> None:
        module = names[mname]
        if getattr(module, attr) != value:
            setattr(module, attr, value)
            log.append({"module": mname, "attr": attr, "value": value})

    for mname in sorted(touched):
        module = names[mname]
        for kind, shrinker in shrinkers():
            if isinstance(module, kind):
                for attr, value in shrinker(module, old_attrs[mname]).items():
                    update(mname, attr, value)
                break
    for prefix, fraction in head_fraction.items():
        for mname in names:
            if mname != prefix and not mname.startswith(prefix + "." if prefix else ""):
                continue
            for attr in HEAD_COUNT_ATTRS:
                old = old_attrs[mname].get(attr)
                if isinstance(old, int) and not isinstance(old, bool):
                    update(mname, attr, round(old * fraction))
    model.__dict__[STRUCTURE_ATTR] = log


def _attrs(module: nn.Module) -> dict[str, Any]:
    return {k: v for k, v in vars(module).items() if isinstance(v, int | tuple)}


def _linear(m: nn.Linear, old: dict[str, Any]) -> dict[str, Any]:
    return {"in_features": m.weight.shape[1], "out_features": m.weight.shape[0]}


def _conv(m: nn.modules.conv._ConvNd, old: dict[str, Any]) -> dict[str, Any]:
    w = m.weight
    if m.transposed:
        return {"in_channels": w.shape[0], "out_channels": w.shape[1] * old["groups"]}
    if old["groups"] == 1:
        return {"out_channels": w.shape[0], "in_channels": w.shape[1]}
    per_group_out = old["out_channels"] // old["groups"]
    groups = w.shape[0] // per_group_out
    return {"out_channels": w.shape[0], "groups": groups, "in_channels": groups * w.shape[1]}


def _batch_norm(m: nn.modules.batchnorm._NormBase, old: dict[str, Any]) -> dict[str, Any]:
    ref = m.weight if m.weight is not None else m.running_mean
    return {"num_features": ref.shape[0]}


def _group_norm(m: nn.GroupNorm, old: dict[str, Any]) -> dict[str, Any]:
    width = old["num_channels"] // old["num_groups"]
    channels = m.weight.shape[0]
    return {"num_channels": channels, "num_groups": channels // width}


def _layer_norm(m: nn.LayerNorm, old: dict[str, Any]) -> dict[str, Any]:
    return {"normalized_shape": tuple(m.weight.shape)} if m.weight is not None else {}


def _embedding(m: nn.Embedding, old: dict[str, Any]) -> dict[str, Any]:
    return {"num_embeddings": m.weight.shape[0], "embedding_dim": m.weight.shape[1]}


def _hf_conv1d(m: nn.Module, old: dict[str, Any]) -> dict[str, Any]:
    # transformers' Conv1D stores weight as [in, out].
    return {"nx": m.weight.shape[0], "nf": m.weight.shape[1]}


Shrinker = Callable[[Any, dict[str, Any]], dict[str, Any]]
SHRINKERS: list[tuple[type, Shrinker]] = [
    (nn.Linear, _linear),
    (nn.modules.conv._ConvNd, _conv),
    (nn.modules.batchnorm._NormBase, _batch_norm),
    (nn.GroupNorm, _group_norm),
    (nn.LayerNorm, _layer_norm),
    (nn.Embedding, _embedding),
]


# Every attribute the shrinkers above set: with HEAD_COUNT_ATTRS, all that a structure record
# may hold.
SIZE_ATTRS = frozenset(
    {"in_features", "out_features", "in_channels", "out_channels", "groups", "num_features",
     "num_channels", "num_groups", "normalized_shape", "num_embeddings", "embedding_dim", "nx",
     "nf"}
)  # fmt: skip


def shrinkers() -> list[tuple[type, Shrinker]]:
    """The table above, plus transformers' Conv1D when transformers is in use."""
    conv1d = conv1d_type()
    return SHRINKERS if conv1d is None else [*SHRINKERS, (conv1d, _hf_conv1d)]


def implied_shapes(module: nn.Module, attrs: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """The inverse of the shrinkers: the shapes of a layer's own tensors that its size
    attributes ``attrs`` imply (Linear, Conv, BatchNorm, transformers' Conv1D); empty for
    other layer types. Used to load artifacts whose swap records predate recorded shapes."""
    shapes: dict[str, tuple[int, ...]] = {}
    own = module.state_dict(keep_vars=True)
    has = {k for k, v in own.items() if "." not in k and v is not None}
    conv1d = conv1d_type()
    if isinstance(module, nn.Linear):
        out = attrs["out_features"]
        shapes = {"weight": (out, attrs["in_features"]), "bias": (out,)}
    elif isinstance(module, nn.modules.conv._ConvNd):
        k, groups = tuple(attrs["kernel_size"]), attrs["groups"]
        cin, cout = attrs["in_channels"], attrs["out_channels"]
        weight = (cin, cout // groups, *k) if attrs["transposed"] else (cout, cin // groups, *k)
        shapes = {"weight": weight, "bias": (cout,)}
    elif isinstance(module, nn.modules.batchnorm._NormBase):
        n = attrs["num_features"]
        shapes = {t: (n,) for t in ("weight", "bias", "running_mean", "running_var")}
    elif conv1d is not None and isinstance(module, conv1d):
        shapes = {"weight": (attrs["nx"], attrs["nf"]), "bias": (attrs["nf"],)}
    return {k: v for k, v in shapes.items() if k in has}


def replay_(model: nn.Module, shapes: dict[str, tuple[int, ...]], record: list[dict]) -> None:
    """Give a freshly built model the shapes and attributes a pruned one was saved with.

    The tensors are placeholders (zeros) until the saved weights are loaded into them."""
    tensors = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    names = dict(model.named_modules(remove_duplicate=False))
    replaced: dict[int, torch.Tensor] = {}
    for name, shape in shapes.items():
        old = tensors.get(name)
        if old is None or tuple(old.shape) == tuple(shape):
            continue
        new = torch.zeros(shape, dtype=old.dtype, device=old.device)
        replaced[id(old)] = (
            nn.Parameter(new, requires_grad=old.requires_grad)
            if isinstance(old, nn.Parameter)
            else new
        )
    for module in names.values():
        for container in (module._parameters, module._buffers):
            for attr, t in list(container.items()):
                if t is not None and id(t) in replaced:
                    container[attr] = replaced[id(t)]
    for entry in record:
        value = entry["value"]
        setattr(names[entry["module"]], entry["attr"], tuple(value) if isinstance(value, list)
                else value)  # fmt: skip
    model.__dict__[STRUCTURE_ATTR] = list(record)
