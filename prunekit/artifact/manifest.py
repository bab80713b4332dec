"""``manifest.json``: read with bounded size, every field type-checked before anything is built.

A corrupted or hostile manifest must end in a PrunekitError naming the field, never in a crash,
a hang or an allocation the artifact's files cannot justify. What the checks here cannot know
(does a stream decode to what it claims) ``prunekit.artifact.tensors.decode`` checks while
decoding, and ``prunekit.artifact.io`` compares every shape with the model before decoding anything.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import torch

from prunekit.errors import PrunekitError, quote

FORMAT = "prunekit-artifact"
# 3: the manifest carries its own checksum (``manifest_sha256``), so an edited manifest is
# refused instead of loading different weights. Versions 1 and 2 (without it) still load.
FORMAT_VERSION = 3
CHECKSUM = "manifest_sha256"
MANIFEST = "manifest.json"
PLAIN, ENCODED = "model.safetensors", "model.encoded.safetensors"
STORAGES = {"plain": PLAIN, "encoded": ENCODED}
DTYPES = {
    name: getattr(torch, name)
    for name in (
        "float16", "bfloat16", "float32", "float64", "complex64", "complex128",
        "float8_e4m3fn", "float8_e5m2", "int8", "int16", "int32", "int64",
        "uint8", "uint16", "uint32", "uint64", "bool",
    )
    if isinstance(getattr(torch, name, None), torch.dtype)
}  # fmt: skip
MAX_MANIFEST_BYTES = 64 << 20
MAX_TENSORS = 1 << 20
MAX_DIMS = 16
MAX_NUMEL = 1 << 48
MAX_NAME = 255  # characters in a file name
# A model is refused when it would decode to over 1 GiB and over 4096 times the artifact's
# bytes: real weights, even 99.9% pruned, stay far below that, zero-filled claims do not.
MAX_EXPANSION, EXPANSION_FLOOR = 4096, 1 << 30


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The parsed, validated ``manifest.json`` of the artifact at ``path`` (format 1 to 3).

    Its checksum must match (format 3 requires one). A format-1 manifest (plain tensors only)
    gets ``storage: "plain"``."""
    path = Path(path)
    if not path.is_dir():
        raise PrunekitError(f"path: {str(path)!r} is not an artifact directory written by pk.save")
    file = path / MANIFEST
    if not file.is_file():
        raise PrunekitError(f"{path}: {MANIFEST} is missing; is this a pk.save directory?")
    if file.stat().st_size > MAX_MANIFEST_BYTES:
        raise PrunekitError(f"{file}: larger than {MAX_MANIFEST_BYTES} bytes; not a manifest")
    try:
        manifest = json.loads(file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise PrunekitError(f"{file}: not valid JSON ({e}); the artifact is corrupted") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise PrunekitError(f"{file}: not a prunekit artifact manifest (format != {FORMAT!r})")
    version = manifest.get("format_version")
    if not _is_int(version) or not 1 <= version <= FORMAT_VERSION:
        raise PrunekitError(
            f"{file}: format_version {quote(version)} is not readable by this prunekit "
            f"(reads 1 to {FORMAT_VERSION}); upgrade prunekit"
        )
    sealed = CHECKSUM in manifest or version >= 3
    if sealed and manifest.get(CHECKSUM) != manifest_digest(manifest):
        raise PrunekitError(
            f"{file}: its contents do not match its checksum ({CHECKSUM}); the manifest "
            f"was edited or corrupted, save the model again"
        )
    for key, kind in (("tensors", dict), ("source", dict), ("files", dict)):
        if not isinstance(manifest.get(key), kind):
            raise PrunekitError(f"{file}: field {key!r} is missing or malformed; re-save it")
    manifest.setdefault("storage", "plain")
    if not isinstance(manifest["storage"], str) or manifest["storage"] not in STORAGES:
        raise PrunekitError(
            f"{file}: storage {quote(manifest['storage'])} is not one of {[*STORAGES]}"
        )
    _check_tensors(file, manifest["tensors"], manifest["storage"])
    _check_files(file, manifest["files"])
    swaps = manifest.get("swaps", [])
    if not isinstance(swaps, list) or not all(_is_swap(s) for s in swaps):
        raise PrunekitError(f"{file}: swaps must be a list of {{module, kind, args}}; re-save it")
    return manifest


def manifest_digest(manifest: dict[str, Any]) -> str:
    """sha256 of the manifest's canonical JSON, its own checksum field left out."""
    body = {k: v for k, v in manifest.items() if k != CHECKSUM}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


def write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    """Write ``folder/manifest.json`` with its checksum. Compact: on a small compressed model
    the manifest is a visible share of the bytes on disk (`prunekit measure DIR` prints it
    readably)."""
    sealed = {**manifest, CHECKSUM: manifest_digest(manifest)}
    (Path(folder) / MANIFEST).write_text(
        json.dumps(sealed, separators=(",", ":")) + "\n", encoding="utf-8"
    )


def weights_file(manifest: dict[str, Any]) -> str:
    """The name of the file holding the tensors: plain safetensors or encoded streams."""
    return STORAGES[manifest["storage"]]


def dtype_of(entry: dict[str, Any]) -> torch.dtype:
    """The torch dtype of a validated tensor entry."""
    return DTYPES[entry["dtype"]]


def decoded_bytes(manifest: dict[str, Any]) -> int:
    """Bytes the tensors take in memory once loaded (tied copies once)."""
    return sum(
        e["numel"] * torch.empty((), dtype=dtype_of(e)).element_size()
        for e in manifest["tensors"].values()
        if "tied_to" not in e
    )


def check_expansion(path: Path, what: str, size: int) -> None:
    """Refuse to build or decode ``size`` bytes (``what``) from an artifact far smaller."""
    on_disk = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
    if size > EXPANSION_FLOOR and size > MAX_EXPANSION * on_disk:
        raise PrunekitError(
            f"{path}: {what} would take {size:,} bytes from an artifact of {on_disk:,}; "
            f"the artifact is corrupted or not from pk.save"
        )


def verify_files(path: Path, manifest: dict[str, Any]) -> None:
    """Every file the manifest lists exists, with its recorded size and checksum; the weights
    file exists in any case."""
    weights = weights_file(manifest)
    if not (path / weights).is_file():
        raise PrunekitError(f"{path}: {weights} is missing; the artifact is incomplete")
    for name, info in manifest["files"].items():
        file = path / name
        if not file.is_file():
            raise PrunekitError(f"{path}: {quote(name)} is missing; the artifact is incomplete")
        size, digest = info.get("bytes"), info.get("sha256")
        if (size is not None and file.stat().st_size != size) or (
            digest is not None and sha256(file) != digest
        ):
            raise PrunekitError(
                f"{file}: contents do not match the checksum in {MANIFEST}; the file is "
                f"corrupted, save the model again"
            )


def sha256(file: Path) -> str:
    digest = hashlib.sha256()
    with file.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_tensors(file: Path, tensors: dict[str, Any], storage: str) -> None:
    if len(tensors) > MAX_TENSORS:
        raise PrunekitError(f"{file}: {len(tensors)} tensors; more than {MAX_TENSORS}")
    for name, entry in tensors.items():
        problem = _tensor_problem(entry, tensors, storage)
        if problem:
            raise PrunekitError(
                f"{file}: tensor {quote(name)}: {problem}; the artifact is corrupted"
            )


def _tensor_problem(entry: Any, tensors: dict[str, Any], storage: str) -> str | None:
    if not isinstance(entry, dict):
        return "entry is not an object"
    if not isinstance(entry.get("dtype"), str) or entry["dtype"] not in DTYPES:
        return f"dtype {quote(entry.get('dtype'))} is not one of {', '.join(DTYPES)}"
    shape = entry.get("shape")
    if not isinstance(shape, list) or len(shape) > MAX_DIMS or not all(map(_is_size, shape)):
        return f"shape {quote(shape)} is not a list of at most {MAX_DIMS} sizes"
    numel = math.prod(shape)
    if numel > MAX_NUMEL:
        return f"shape {shape} has more than {MAX_NUMEL} elements"
    entry.setdefault("numel", numel)
    if entry["numel"] != numel or not _is_size(entry.get("nonzeros", 0)):
        return (
            f"numel {quote(entry['numel'])} or nonzeros {quote(entry.get('nonzeros'))} do not "
            f"fit {shape}"
        )
    if "tied_to" in entry:
        owner = tensors.get(entry["tied_to"]) if isinstance(entry["tied_to"], str) else None
        if not isinstance(owner, dict) or "tied_to" in owner:
            return f"tied_to {quote(entry['tied_to'])} names no stored tensor"
        if owner.get("dtype") != entry["dtype"] or owner.get("shape") != shape:
            return f"tied to {quote(entry['tied_to'])}, whose dtype or shape differs"
        return None
    if storage == "plain":
        return None if entry.get("encoding", "dense") == "dense" else "plain storage is dense"
    if not isinstance(entry.get("encoding"), str) or not isinstance(entry.get("values"), str):
        return "encoding and values must be strings"
    if not isinstance(entry.get("streams"), list) or not _is_size(entry.get("bytes")):
        return "streams must be a list and bytes a size"
    return None


def _check_files(file: Path, files: dict[str, Any]) -> None:
    for name, info in files.items():
        # Only plain names: a listed "../x" must not make load read outside the artifact.
        simple = (
            isinstance(name, str)
            and name not in ("", ".", "..")
            and "/" not in name
            and len(name) <= MAX_NAME  # longer ones make the file system raise, not answer
        )
        if not simple or "\\" in name or not isinstance(info, dict):
            raise PrunekitError(f"{file}: files entry {quote(name)} is malformed; re-save it")
        if not _is_size(info.get("bytes", 0)) or not isinstance(info.get("sha256", ""), str):
            raise PrunekitError(f"{file}: files entry {quote(name)} is malformed; re-save it")


def _is_swap(entry: Any) -> bool:
    return (
        isinstance(entry, dict)
        and isinstance(entry.get("module"), str)
        and isinstance(entry.get("kind"), str)
        and isinstance(entry.get("args", {}), dict)
    )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_size(value: Any) -> bool:
    return _is_int(value) and 0 <= value <= MAX_NUMEL
