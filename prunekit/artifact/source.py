"""The source of an artifact: how ``load`` rebuilds the module before replaying and loading.

``{"kind": "builtin", "name", "kwargs"}`` (a registered example model), ``{"kind": "hf", "path",
"model_type", "class"}`` (a transformers model, reopened from the artifact's own folder) or
``{"kind": "user", "class"}`` (a user's class, which ``load`` cannot import: it needs
``model=``). Other kinds a caller records (``py`` for a user factory) load like ``user``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunekit.artifact.manifest import check_expansion, dtype_of
from prunekit.artifact.structure import changed_builtin_source
from prunekit.errors import PrunekitError, quote


def check_source(model: nn.Module, source: dict[str, Any] | None) -> dict[str, Any]:
    """``source`` checked (a dict with a ``kind``, JSON-serialisable), or when None the one
    ``model`` implies: Hugging Face, a registered builtin (also pruned or with swapped layers),
    or its class."""
    # Imported here: the model registry imports prunekit.io at import time.
    from prunekit.models.hf import hf_source, is_hf_model

    if source is None and is_hf_model(model):
        return hf_source(model)
    if source is None:
        from prunekit.models.registry import builtin_source

        builtin = builtin_source(model) or changed_builtin_source(model)
        if builtin is not None:
            return builtin
        cls = type(model)
        return {"kind": "user", "class": f"{cls.__module__}.{cls.__qualname__}"}
    if not isinstance(source, Mapping) or not isinstance(source.get("kind"), str):
        raise PrunekitError(
            f"source: expected a dict with a 'kind' string, e.g. "
            f"{{'kind': 'builtin', 'name': 'lenet5', 'kwargs': {{}}}}; got {source!r}"
        )
    if source["kind"] == "builtin" and not isinstance(source.get("name"), str):
        raise PrunekitError(f"source: a builtin source needs a 'name' string; got {source!r}")
    try:
        json.dumps(source)
    except (TypeError, ValueError) as e:
        raise PrunekitError(f"source: must be JSON-serialisable ({e}); got {source!r}") from None
    return dict(source)


def rebuild(manifest: dict[str, Any], path: Path, structured: bool) -> nn.Module:
    """The module the manifest's source names, freshly built (weights not yet loaded): a
    builtin by name, a Hugging Face model from the artifact folder (``from_pretrained`` when
    its plain weights fit config.json, else from config.json alone)."""
    source = manifest["source"]
    if source.get("kind") == "hf":
        from prunekit.models.hf import build_hf_model, load_hf_model

        class_name = source.get("class")
        class_name = class_name if isinstance(class_name, str) else None
        plain_fits = not structured or manifest["structure"].get("from_pretrained")
        if manifest["storage"] == "encoded" or not plain_fits:
            return build_hf_model(
                path,
                class_name,
                dtype=_main_dtype(manifest["tensors"]),
                check_bytes=lambda n: check_expansion(path, "the model its config.json builds", n),
            )
        return load_hf_model(path, class_name)
    if source.get("kind") != "builtin" or not isinstance(source.get("name"), str):
        what = source.get("class") or source.get("kind")
        raise PrunekitError(
            f"{path}: the model {quote(what)} is not a built-in one, so prunekit cannot "
            f"rebuild it; pass model=YourClass() to pk.load"
        )
    from prunekit.models import build

    kwargs = source.get("kwargs") or {}
    if not isinstance(kwargs, dict):
        raise PrunekitError(f"{path}: source.kwargs must be a dict; got {quote(kwargs)}")
    _probe_size(path, lambda: build(source["name"], **kwargs))
    return build(source["name"], **kwargs)


def _probe_size(path: Path, build: Callable[[], nn.Module]) -> None:
    # Built on the meta device first (shapes, no memory), so kwargs from a hostile manifest
    # cannot make the real build allocate far more than the artifact could fill.
    try:
        with torch.device("meta"):
            probe = build()
    except (RuntimeError, NotImplementedError):
        return  # a factory that needs real tensors while building; sized by its own checks
    size = sum(t.numel() * t.element_size() for t in probe.state_dict().values())
    check_expansion(path, "the model its source builds", size)


def _main_dtype(tensors: dict[str, Any]) -> torch.dtype | None:
    # The floating-point dtype holding most of the weights, as from_pretrained's dtype="auto".
    counts: dict[torch.dtype, int] = {}
    for entry in tensors.values():
        dtype = dtype_of(entry)
        if dtype.is_floating_point:
            counts[dtype] = counts.get(dtype, 0) + entry["numel"]
    return max(counts, key=counts.__getitem__) if counts else None
