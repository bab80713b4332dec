"""The artifact: a directory holding ``manifest.json`` and one safetensors file, never a pickle.

Layout of ``manifest.json`` (``format_version`` 3; versions 1 and 2 still load)::

    format, format_version, prunekit_version,
    source:   how to rebuild the module ({"kind": "builtin", "name", "kwargs"},
              {"kind": "hf", "path", "model_type", "class"} or
              {"kind": "user", "class": "pkg.mod.Class"}),
    storage:  "encoded": ``model.encoded.safetensors`` holds each tensor in its smallest exact
              form (see ``prunekit.artifact``), or "plain": ``model.safetensors`` holds the
              tensors as they are,
    tensors:  state_dict name -> {dtype, shape, numel, nonzeros, bytes (in the weights file),
              then ``tied_to`` for a tensor sharing another's storage, or its encoding:
              encoding, values, [offset], streams [{codec, bits, count, bytes}]},
    sparsity: {params, nonzeros, sparsity, prunable_params, prunable_nonzeros, prunable_sparsity},
    files:    every file but the manifest -> {bytes, sha256},
    structure (only for a structurally pruned model): {
              record: [{module, attr, value}], the attribute changes surgery made, replayed by
                  ``load`` on the freshly built dense model together with ``tensors``' shapes,
              config: Hugging Face only, the widths written into config.json,
              from_pretrained: Hugging Face only, whether transformers' ``from_pretrained``
                  opens the folder directly},
    swaps (only for a model with swapped-in layers, e.g. codebooks or int8 weights):
              [{module, kind, args, [shapes]}], replayed by ``load`` together with the
              structure, before the tensors are loaded (``prunekit.surgery.swaps``); ``shapes``: the
              replaced layer's pruned tensor shapes, when structured pruning came first,
    manifest_sha256: the checksum of everything above (canonical JSON), so an edited
              manifest is refused rather than loading different weights.

A Hugging Face model (``transformers.PreTrainedModel``) without swapped layers is written by its
own ``save_pretrained`` with plain storage, so the directory is also a Hugging Face folder that
``from_pretrained`` and ``hf:DIR`` open (``model.safetensors`` is then transformers' file, which
omits tied copies and keeps the state_dict names, where transformers 5 would by default rename
some back to an older checkpoint layout); ``compress=True`` encodes it too, and then only
``pk.load`` opens it.
"""

from __future__ import annotations

import inspect
import json
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_model
from torch import nn

from prunekit.artifact.container import read_encoded, read_plain, storage_key, write_encoded
from prunekit.artifact.manifest import (
    ENCODED,
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    PLAIN,
    check_expansion,
    decoded_bytes,
    dtype_of,
    read_manifest,
    sha256,
    verify_files,
    weights_file,
    write_manifest,
)
from prunekit.artifact.source import check_source, rebuild
from prunekit.artifact.structure import (
    check_record_fits,
    hf_config_updates,
    outside,
    rebuild_,
    record_of,
)
from prunekit.atomic import staged_dir
from prunekit.errors import PrunekitError, quote
from prunekit.models.paths import prunekit_version
from prunekit.surgery.shrink import structure_record
from prunekit.surgery.swaps import swap_record
from prunekit.surgery.transaction import transaction

__all__ = ["artifact_bytes", "artifact_size", "load", "read_manifest", "save"]

HF_MAX_SHARD = "10000GB"


def save(
    model: nn.Module,
    path: str | Path,
    *,
    source: dict[str, Any] | None = None,
    tokenizer: Any = None,
    compress: bool | None = None,
) -> Path:
    """Write ``model`` (its full state_dict, buffers included) as an artifact directory.

    ``source`` says how ``load`` can rebuild the module without being handed one, e.g.
    ``{"kind": "builtin", "name": "lenet5", "kwargs": {}}``; when None it records the class
    (``{"kind": "user", "class": "pkg.mod.Class"}``), which ``load`` cannot import by itself, or
    for a Hugging Face model ``{"kind": "hf", ...}``, which ``load`` reopens from the directory.
    ``tokenizer`` (anything with ``save_pretrained``, e.g. a Hugging Face tokenizer) is saved
    beside the weights. ``compress``: encode every tensor in its smallest exact form (True),
    store them as they are (False), or None: encode, except a Hugging Face model without
    swapped layers, which stays a folder ``from_pretrained`` opens.
    The directory appears complete or not at all: an existing artifact at ``path`` is replaced
    only once the new one is fully written. Returns the artifact directory.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module; got {type(model).__name__}")
    if compress is not None and not isinstance(compress, bool):
        raise TypeError(f"compress: expected True, False or None; got {compress!r}")
    path = Path(path)
    # Imported here: the model registry may import this module at import time.
    from prunekit.models.hf import is_hf_model

    source = check_source(model, source)
    if tokenizer is not None and not callable(getattr(tokenizer, "save_pretrained", None)):
        raise PrunekitError(
            f"tokenizer: expected a Hugging Face tokenizer (with save_pretrained); got "
            f"{type(tokenizer).__name__}"
        )
    hf, swaps = is_hf_model(model), swap_record(model)
    encoded = compress if compress is not None else not (hf and not swaps)
    with staged_dir(path, replaceable=lambda p: (p / MANIFEST).is_file()) as tmp:
        entries = _write_tensors(model, tmp, hf=hf, encoded=encoded)
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp))
        manifest = _manifest(model, source, "encoded" if encoded else "plain", entries)
        structure = _structure(model, tmp, hf, encoded)
        if structure is not None:
            manifest["structure"] = structure
        if swaps:
            manifest["swaps"] = swaps
        manifest["files"] = {
            f.name: {"bytes": f.stat().st_size, "sha256": sha256(f)}
            for f in sorted(tmp.iterdir())
            if f.is_file()
        }
        write_manifest(tmp, manifest)
    return path


def load(path: str | Path, model: nn.Module | None = None) -> nn.Module:
    """Read an artifact written by ``save``; returns the module in eval mode.

    With ``model`` given, every tensor's shape and dtype is checked against the manifest before
    any weight is decoded, and a mismatch leaves ``model`` as it was; the weights then load
    strictly into it. Without ``model``, a built-in source is rebuilt with
    ``prunekit.models.build`` and a Hugging Face one from the artifact directory itself
    (``from_pretrained``, or its config.json alone when the weights are encoded or do not fit
    that config). Then, in order: a structure record is replayed (the saved shapes and layer
    attributes), the recorded layer swaps are replayed, and the tensors are decoded and loaded.
    A damaged or hostile artifact raises PrunekitError.
    """
    path = Path(path)
    manifest = read_manifest(path)
    record = record_of(manifest)
    swaps = manifest.get("swaps", [])
    verify_files(path, manifest)
    check_expansion(path, "its tensors", decoded_bytes(manifest))
    if model is None:
        model = rebuild(manifest, path, bool(record))
    elif not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module or None; got {type(model).__name__}")
    swapped = [e["module"] for e in swaps]
    _check_names(model, manifest["tensors"], path, skip=swapped)
    check_record_fits(model, record, path)
    # Every check comes before load_state_dict, the one step that writes into the tensors of a
    # model passed in: the transaction restores structure, swaps and records, no values needed.
    with transaction(model):
        shapes = {n: e["shape"] for n, e in manifest["tensors"].items()}
        rebuild_(model, shapes, record, swaps, path)
        _check_names(model, manifest["tensors"], path)
        _check_shapes(model, manifest["tensors"], path)
        state = _read_state(path, manifest)
        _check_values(model, state, path)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise PrunekitError(f"{path}: the weights do not fit the model: {e}") from None
    return model.eval()


def artifact_bytes(path: str | Path) -> int:
    """Bytes on disk of the artifact directory at ``path`` (the sum of its files' sizes)."""
    path = Path(path)
    if not path.is_dir():
        raise PrunekitError(f"path: {str(path)!r} is not an artifact directory")
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def artifact_size(model: nn.Module) -> int:
    """Bytes the artifact of ``model`` takes on disk, saved into a temporary directory."""
    with tempfile.TemporaryDirectory(prefix="prunekit-size-") as tmp:
        return artifact_bytes(save(model, Path(tmp) / "model"))


# --------------------------------------------------------------------------- saving


def _write_tensors(model: nn.Module, folder: Path, *, hf: bool, encoded: bool) -> dict[str, Any]:
    """Writes the weights file (and a Hugging Face model's config); returns each tensor's
    manifest fields beyond dtype, shape and counts."""
    if encoded:
        if hf:
            _save_hf_config(model, folder)
        return write_encoded(model.state_dict(), folder / ENCODED)
    tied = _save_hf(model, folder) if hf else _save_plain(model, folder)
    entries: dict[str, Any] = {}
    for name, t in model.state_dict().items():
        entries[name] = {"encoding": "dense", "bytes": 0 if name in tied else t.nbytes}
        if name in tied:
            entries[name]["tied_to"] = tied[name]
    return entries


def _save_plain(model: nn.Module, folder: Path) -> dict[str, str]:
    save_model(model, str(folder / PLAIN))
    # safetensors stores each shared tensor once and names the dropped aliases in its metadata.
    with safe_open(str(folder / PLAIN), framework="pt") as f:
        return dict(f.metadata() or {})


def _save_hf(model: nn.Module, folder: Path) -> dict[str, str]:
    # One weights file keeps the manifest's layout; transformers would shard past 5-50 GB.
    kwargs: dict[str, Any] = {"max_shard_size": HF_MAX_SHARD}
    # transformers 5 renames some models' weights on save, back to their original checkpoints'
    # names (its conversion mapping reversed: SegFormer's stages.N.blocks -> encoder.block.N,
    # ViT's q_proj -> attention.query); keeping the state_dict names keeps the file and the
    # manifest in step, and from_pretrained reads those names as well.
    if "save_original_format" in inspect.signature(model.save_pretrained).parameters:
        kwargs["save_original_format"] = False
    model.save_pretrained(str(folder), **kwargs)  # type: ignore[attr-defined]
    weights = folder / PLAIN
    if not weights.is_file():
        raise PrunekitError(
            f"save: transformers did not write {PLAIN} for {type(model).__name__}; "
            f"prunekit saves Hugging Face models as one safetensors file"
        )
    with safe_open(str(weights), framework="pt") as f:
        stored = set(f.keys())
    state = model.state_dict()
    owners = {storage_key(t): name for name, t in state.items() if name in stored}
    tied: dict[str, str] = {}
    for name, t in state.items():
        if name in stored:
            continue
        owner = owners.get(storage_key(t))
        if owner is None:
            raise PrunekitError(
                f"save: transformers saved {type(model).__name__} without tensor {name!r}, "
                f"which shares memory with no saved tensor: its names differ from "
                f"state_dict(); save with compress=True, which stores the state_dict names"
            )
        tied[name] = owner
    return tied


def _save_hf_config(model: nn.Module, folder: Path) -> None:
    # The config (and generation settings) that rebuild the architecture; the weights go to the
    # encoded file, so transformers finds no model.safetensors and refuses rather than loading
    # random weights.
    model.config.save_pretrained(str(folder))  # type: ignore[attr-defined]
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    _write_json(folder / "config.json", {**config, "architectures": [type(model).__name__]})
    generation = getattr(model, "generation_config", None)
    if generation is not None and model.can_generate():  # type: ignore[operator]
        generation.save_pretrained(str(folder))


def _manifest(
    model: nn.Module, source: dict[str, Any], storage: str, entries: dict[str, Any]
) -> dict[str, Any]:
    tensors: dict[str, Any] = {}
    for name, t in model.state_dict().items():
        tensors[name] = {
            "dtype": str(t.dtype).removeprefix("torch."),
            "shape": list(t.shape),
            "numel": t.numel(),
            "nonzeros": int(torch.count_nonzero(t)),
            **entries[name],
        }
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "prunekit_version": prunekit_version(),
        "source": source,
        "storage": storage,
        "tensors": tensors,
        "sparsity": _sparsity_summary(model),
    }


def _sparsity_summary(model: nn.Module) -> dict[str, Any]:
    # prunekit.measure imports this module (artifact sizes); importing it back at call time
    # keeps the import graph acyclic.
    from prunekit.measure.counting import count_nonzeros, count_params, prunable_weights

    params, nonzeros = count_params(model), count_nonzeros(model)
    weights = [w for _, _, w in prunable_weights(model)]
    p_params = sum(w.numel() for w in weights)
    p_nonzeros = sum(int(torch.count_nonzero(w)) for w in weights)
    return {
        "params": params,
        "nonzeros": nonzeros,
        "sparsity": 1 - nonzeros / params if params else 0.0,
        "prunable_params": p_params,
        "prunable_nonzeros": p_nonzeros,
        "prunable_sparsity": 1 - p_nonzeros / p_params if p_params else 0.0,
    }


def _structure(model: nn.Module, folder: Path, hf: bool, encoded: bool) -> dict[str, Any] | None:
    record = structure_record(model)
    if not record:
        return None
    structure: dict[str, Any] = {"record": record}
    if hf:
        updates, complete = hf_config_updates(model)
        if updates:
            config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
            _write_json(folder / "config.json", {**config, **updates})
        structure.update(config=updates, from_pretrained=complete and not encoded)
    return structure


# --------------------------------------------------------------------------- loading


def _check_values(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    # Values a layer's forward would trip over later (a codebook index past the codebook's end)
    # are refused now, not at the first forward: swapped-in layers say what they need, given
    # their own part of the state about to be loaded.
    for name, module in model.named_modules():
        check = getattr(module, "state_problem", None)
        if not callable(check):
            continue
        prefix = f"{name}." if name else ""
        problem = check({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})
        if problem:
            raise PrunekitError(f"{path}: layer {name!r}: {problem}; the artifact is corrupted")


def _check_names(
    model: nn.Module, tensors: dict[str, Any], path: Path, skip: list[str] | None = None
) -> None:
    state = model.state_dict()
    if skip:
        tensors, state = outside(tensors, skip), outside(state, skip)
    missing = [n for n in tensors if n not in state]
    unexpected = [n for n in state if n not in tensors]
    if missing or unexpected:
        raise PrunekitError(
            f"{path}: the model's tensors differ from the artifact's: missing in the model "
            f"{quote(missing[:5], 300)}, not in the artifact {quote(unexpected[:5], 300)}; pass "
            f"the architecture it was saved from"
        )


def _check_shapes(model: nn.Module, tensors: dict[str, Any], path: Path) -> None:
    state = model.state_dict()
    for name, entry in tensors.items():
        expected, received = entry["shape"], list(state[name].shape)
        if expected != received:
            raise PrunekitError(
                f"{path}: tensor {quote(name)} has shape {expected} in the artifact but {received} "
                f"in the model passed; build the model with the saved configuration"
            )
        if dtype_of(entry) != state[name].dtype:
            raise PrunekitError(
                f"{path}: tensor {quote(name)} is {entry['dtype']} in the artifact but "
                f"{str(state[name].dtype).removeprefix('torch.')} in the model passed; convert "
                f"the model (e.g. .to(torch.{entry['dtype']})) before loading"
            )


def _read_state(path: Path, manifest: dict[str, Any]) -> dict[str, torch.Tensor]:
    file = path / weights_file(manifest)
    if manifest["storage"] == "encoded":
        return read_encoded(file, manifest)
    return read_plain(file, manifest)


def _write_json(file: Path, obj: dict[str, Any]) -> None:
    # Compact: on a small compressed model the manifest is a visible share of the bytes on disk
    # (`prunekit measure DIR` prints it readably).
    file.write_text(json.dumps(obj, separators=(",", ":")) + "\n", encoding="utf-8")
