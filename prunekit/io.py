"""The artifact: a directory holding ``model.safetensors`` and ``manifest.json``, never a pickle.

Layout of ``manifest.json`` (``format_version`` 1)::

    format, format_version, prunekit_version,
    source:   how to rebuild the module ({"kind": "builtin", "name", "kwargs"},
              {"kind": "hf", "path", "model_type", "class"} or
              {"kind": "user", "class": "pkg.mod.Class"}),
    tensors:  state_dict name -> {dtype, shape, numel, nonzeros, encoding, [tied_to]},
    sparsity: {params, nonzeros, sparsity, prunable_params, prunable_nonzeros, prunable_sparsity},
    files:    file name -> {bytes, sha256},
    structure (only for a structurally pruned model): {
              record: [{module, attr, value}], the attribute changes surgery made, replayed by
                  ``load`` on the freshly built dense model together with ``tensors``' shapes,
              config: Hugging Face only, the widths written into config.json,
              from_pretrained: Hugging Face only, whether config.json alone describes every
                  shape, so that transformers' ``from_pretrained`` opens the folder directly}

``encoding`` says how a tensor is stored in the weights file. Only ``"dense"`` exists today;
later encodings (sparse bitmask, int8, codebooks) add a value and a decoder, and a reader that
meets an encoding it does not know refuses instead of loading garbage.

A Hugging Face model (``transformers.PreTrainedModel``) is written by its own
``save_pretrained``, so the directory is also a Hugging Face folder that ``from_pretrained`` and
``hf:DIR`` open; ``model.safetensors`` is then transformers' file, which omits tied copies (the
manifest records them with ``tied_to``), and the tokenizer's files sit beside it when given.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_model
from torch import nn

from prunekit.errors import PrunekitError
from prunekit.io_structure import (
    check_consistent,
    check_record_fits,
    hf_config_updates,
    pruned_builtin_source,
    record_of,
    replay,
    restored_on_error,
)
from prunekit.prune.structured.shrink import structure_record

FORMAT = "prunekit-artifact"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
WEIGHTS = "model.safetensors"
ENCODINGS = ("dense",)
HF_MAX_SHARD = "10000GB"


def save(
    model: nn.Module,
    path: str | Path,
    *,
    source: dict[str, Any] | None = None,
    tokenizer: Any = None,
) -> Path:
    """Write ``model`` (its full state_dict, buffers included) as an artifact directory.

    ``source`` says how ``load`` can rebuild the module without being handed one, e.g.
    ``{"kind": "builtin", "name": "lenet5", "kwargs": {}}``; when None it records the class
    (``{"kind": "user", "class": "pkg.mod.Class"}``), which ``load`` cannot import by itself, or
    for a Hugging Face model ``{"kind": "hf", ...}``, which ``load`` reopens from the directory.
    ``tokenizer`` (anything with ``save_pretrained``, e.g. a Hugging Face tokenizer) is saved
    beside the weights.
    The directory appears complete or not at all: an existing artifact at ``path`` is replaced
    only once the new one is fully written. Returns the artifact directory.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module; got {type(model).__name__}")
    path = Path(path)
    # Imported here, as in _rebuild: the model registry may import this module at import time.
    from prunekit.models.hf import is_hf_model

    source = _check_source(model, source)
    if tokenizer is not None and not callable(getattr(tokenizer, "save_pretrained", None)):
        raise PrunekitError(
            f"tokenizer: expected a Hugging Face tokenizer (with save_pretrained); got "
            f"{type(tokenizer).__name__}"
        )
    if path.exists() and not _replaceable(path):
        raise PrunekitError(
            f"path: {str(path)!r} exists and is not a prunekit artifact; "
            f"choose a new or empty directory"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-", dir=path.parent))
    try:
        tied = _save_hf(model, tmp) if is_hf_model(model) else _save_plain(model, tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp))
        manifest = _manifest(model, source, tmp / WEIGHTS, tied)
        structure = _structure(model, tmp, is_hf_model(model))
        if structure is not None:
            manifest["structure"] = structure
        _write_json(tmp / MANIFEST, manifest)
        _swap_into_place(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def load(path: str | Path, model: nn.Module | None = None) -> nn.Module:
    """Read an artifact written by ``save``; returns the module in eval mode.

    With ``model`` given, every tensor's shape is checked against the manifest before any
    weight is copied, and a mismatch leaves ``model`` as it was; the weights then load strictly
    into it. Without ``model``, a built-in source is rebuilt with ``prunekit.models.build`` and a
    Hugging Face one with ``from_pretrained`` on the artifact directory itself (or from its
    config.json alone when a structurally pruned model's weights do not fit that config).
    A structurally pruned model (the manifest has a structure record) is built dense, then given
    the saved shapes and layer attributes by replaying the record; shapes are compared after that.
    """
    path = Path(path)
    manifest = read_manifest(path)
    record = record_of(manifest)
    if model is None:
        model = _rebuild(manifest, path, bool(record))
    elif not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module or None; got {type(model).__name__}")
    state = _read_state(path, manifest)
    _check_names(model, manifest["tensors"], path)
    check_record_fits(model, record, path)
    with restored_on_error(model, record):
        if record:
            replay(model, {n: e["shape"] for n, e in manifest["tensors"].items()}, record)
            check_consistent(model, path)
        _check_shapes(model, manifest["tensors"], path)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise PrunekitError(f"{path}: the weights do not fit the model: {e}") from None
    return model.eval()


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The parsed, validated ``manifest.json`` of the artifact at ``path``."""
    path = Path(path)
    if not path.is_dir():
        raise PrunekitError(f"path: {str(path)!r} is not an artifact directory written by pk.save")
    file = path / MANIFEST
    try:
        manifest = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PrunekitError(
            f"{path}: {MANIFEST} is missing; is this a pk.save directory?"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PrunekitError(f"{file}: not valid JSON ({e}); the artifact is corrupted") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise PrunekitError(f"{file}: not a prunekit artifact manifest (format != {FORMAT!r})")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise PrunekitError(
            f"{file}: format_version {version!r} is not readable by this prunekit "
            f"(reads up to {FORMAT_VERSION}); upgrade prunekit"
        )
    for key, kind in (("tensors", dict), ("source", dict), ("files", dict)):
        if not isinstance(manifest.get(key), kind):
            raise PrunekitError(f"{file}: field {key!r} is missing or malformed; re-save it")
    return manifest


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


def _check_source(model: nn.Module, source: dict[str, Any] | None) -> dict[str, Any]:
    from prunekit.models.hf import hf_source, is_hf_model

    if source is None and is_hf_model(model):
        return hf_source(model)
    if source is None:
        from prunekit.models.registry import builtin_source

        builtin = builtin_source(model) or pruned_builtin_source(model)
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


def _replaceable(path: Path) -> bool:
    # Replacing only empty directories and earlier artifacts means a typo in `path` can never
    # delete a user's unrelated files.
    return path.is_dir() and (not any(path.iterdir()) or (path / MANIFEST).is_file())


def _swap_into_place(tmp: Path, path: Path) -> None:
    # A non-empty directory cannot be replaced by one rename, so the old artifact is moved
    # aside first and restored if the second rename fails.
    if not path.exists():
        tmp.rename(path)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
    old.rmdir()
    path.rename(old)
    try:
        tmp.rename(path)
    except BaseException:
        old.rename(path)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _save_plain(model: nn.Module, folder: Path) -> dict[str, str]:
    save_model(model, str(folder / WEIGHTS))
    # safetensors stores each shared tensor once and names the dropped aliases in its metadata.
    with safe_open(str(folder / WEIGHTS), framework="pt") as f:
        return dict(f.metadata() or {})


def _save_hf(model: nn.Module, folder: Path) -> dict[str, str]:
    # One weights file keeps the manifest's layout; transformers would shard past 5-50 GB.
    model.save_pretrained(str(folder), max_shard_size=HF_MAX_SHARD)  # type: ignore[attr-defined]
    weights = folder / WEIGHTS
    if not weights.is_file():
        raise PrunekitError(
            f"save: transformers did not write {WEIGHTS} for {type(model).__name__}; "
            f"prunekit saves Hugging Face models as one safetensors file"
        )
    with safe_open(str(weights), framework="pt") as f:
        stored = set(f.keys())
    state = model.state_dict()
    owners = {_storage(t): name for name, t in state.items() if name in stored}
    tied: dict[str, str] = {}
    for name, t in state.items():
        if name in stored:
            continue
        owner = owners.get(_storage(t))
        if owner is None:
            raise PrunekitError(
                f"save: transformers saved {type(model).__name__} without tensor {name!r}, "
                f"which shares memory with no saved tensor; its names differ from state_dict()"
            )
        tied[name] = owner
    return tied


def _storage(t: torch.Tensor) -> tuple[Any, ...]:
    return (t.data_ptr(), tuple(t.shape), tuple(t.stride()), t.dtype)


def _manifest(
    model: nn.Module, source: dict[str, Any], weights: Path, tied: dict[str, str]
) -> dict[str, Any]:
    tensors: dict[str, Any] = {}
    for name, t in model.state_dict().items():
        entry = {
            "dtype": str(t.dtype).removeprefix("torch."),
            "shape": list(t.shape),
            "numel": t.numel(),
            "nonzeros": int(torch.count_nonzero(t)),
            "encoding": "dense",
        }
        if name in tied:
            entry["tied_to"] = tied[name]
        tensors[name] = entry
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "prunekit_version": _version(),
        "source": source,
        "tensors": tensors,
        "sparsity": _sparsity_summary(model),
        "files": {WEIGHTS: {"bytes": weights.stat().st_size, "sha256": _sha256(weights)}},
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


def _structure(model: nn.Module, folder: Path, hf: bool) -> dict[str, Any] | None:
    record = structure_record(model)
    if not record:
        return None
    structure: dict[str, Any] = {"record": record}
    if hf:
        updates, complete = hf_config_updates(model)
        if updates:
            config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
            _write_json(folder / "config.json", {**config, **updates})
        structure.update(config=updates, from_pretrained=complete)
    return structure


def _rebuild(manifest: dict[str, Any], path: Path, structured: bool) -> nn.Module:
    source = manifest["source"]
    if source.get("kind") == "hf":
        from prunekit.models.hf import build_hf_model, load_hf_model

        class_name = source.get("class")
        class_name = class_name if isinstance(class_name, str) else None
        if structured and not manifest["structure"].get("from_pretrained"):
            return build_hf_model(path, class_name, dtype=_main_dtype(manifest["tensors"]))
        return load_hf_model(path, class_name)
    if source.get("kind") != "builtin":
        what = source.get("class") or source.get("kind")
        raise PrunekitError(
            f"{path}: the model ({what}) is not a built-in one, so prunekit cannot rebuild it; "
            f"pass model=YourClass() to pk.load"
        )
    from prunekit.models import build

    kwargs = source.get("kwargs") or {}
    if not isinstance(kwargs, dict):
        raise PrunekitError(f"{path}: source.kwargs must be a dict; got {kwargs!r}")
    return build(source["name"], **kwargs)


def _main_dtype(tensors: dict[str, Any]) -> torch.dtype | None:
    # The floating-point dtype holding most of the weights, as from_pretrained's dtype="auto".
    counts: dict[str, int] = {}
    for entry in tensors.values():
        dtype = getattr(torch, str(entry.get("dtype")), None)
        if isinstance(dtype, torch.dtype) and dtype.is_floating_point:
            counts[entry["dtype"]] = counts.get(entry["dtype"], 0) + int(entry.get("numel", 0))
    return getattr(torch, max(counts, key=counts.__getitem__)) if counts else None


def _check_names(model: nn.Module, tensors: dict[str, Any], path: Path) -> None:
    state = model.state_dict()
    missing = [n for n in tensors if n not in state]
    unexpected = [n for n in state if n not in tensors]
    if missing or unexpected:
        raise PrunekitError(
            f"{path}: the model's tensors differ from the artifact's: missing in the model "
            f"{missing[:5]}, not in the artifact {unexpected[:5]}; pass the architecture it "
            f"was saved from"
        )


def _check_shapes(model: nn.Module, tensors: dict[str, Any], path: Path) -> None:
    state = model.state_dict()
    for name, entry in tensors.items():
        expected, received = list(entry.get("shape", [])), list(state[name].shape)
        if expected != received:
            raise PrunekitError(
                f"{path}: tensor {name!r} has shape {expected} in the artifact but {received} "
                f"in the model passed; build the model with the saved configuration"
            )


def _read_state(path: Path, manifest: dict[str, Any]) -> dict[str, torch.Tensor]:
    weights = path / WEIGHTS
    if not weights.is_file():
        raise PrunekitError(f"{path}: {WEIGHTS} is missing; the artifact is incomplete")
    expected = manifest["files"].get(WEIGHTS, {}).get("sha256")
    if expected is not None and _sha256(weights) != expected:
        raise PrunekitError(
            f"{weights}: contents do not match the checksum in {MANIFEST}; the file is "
            f"corrupted, save the model again"
        )
    try:
        stored = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as e:
        raise PrunekitError(f"{weights}: cannot be read ({e}); the file is corrupted") from None
    state: dict[str, torch.Tensor] = {}
    for name, entry in manifest["tensors"].items():
        encoding = entry.get("encoding", "dense")
        if encoding not in ENCODINGS:
            raise PrunekitError(
                f"{path}: tensor {name!r} uses encoding {encoding!r}, unknown to this prunekit "
                f"(knows {list(ENCODINGS)}); upgrade prunekit"
            )
        key = entry.get("tied_to", name)
        if key not in stored or list(stored[key].shape) != list(entry["shape"]):
            raise PrunekitError(
                f"{weights}: tensor {name!r} is missing or has the wrong shape; the artifact is "
                f"corrupted"
            )
        state[name] = stored[key]
    return state


def _write_json(file: Path, obj: dict[str, Any]) -> None:
    file.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")


def _sha256(file: Path) -> str:
    digest = hashlib.sha256()
    with file.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _version() -> str:
    try:
        return metadata.version("prunekit")
    except metadata.PackageNotFoundError:
        return "unknown"
