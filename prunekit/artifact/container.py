"""The weights file: safetensors holding each tensor's encoded streams as one uint8 tensor.

safetensors stays the container (a JSON header and raw bytes: nothing is ever unpickled); the
manifest says how each uint8 tensor decodes. A tensor that shares storage with one written
before it (tied weights) is stored once and recorded with ``tied_to``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from prunekit.artifact import tensors
from prunekit.artifact.manifest import DTYPES, dtype_of
from prunekit.errors import PrunekitError

METADATA = {"format": "prunekit-encoded"}


def write_encoded(state: dict[str, torch.Tensor], file: Path) -> dict[str, dict[str, Any]]:
    """Encode every tensor of ``state`` into ``file``; returns each one's manifest fields."""
    entries: dict[str, dict[str, Any]] = {}
    owners: dict[tuple[Any, ...], str] = {}
    blobs: dict[str, torch.Tensor] = {}
    for name, t in state.items():
        dtype = str(t.dtype).removeprefix("torch.")
        if dtype not in DTYPES:
            raise PrunekitError(
                f"save: tensor {name!r} has dtype {dtype}, which the artifact cannot store "
                f"(stores {', '.join(DTYPES)})"
            )
        key = storage_key(t)
        if key is not None and key in owners:
            entries[name] = {"tied_to": owners[key], "bytes": 0}
            continue
        if key is not None:
            owners[key] = name
        encoded = tensors.encode(t)
        blobs[name] = torch.from_numpy(np.frombuffer(encoded.payload, dtype=np.uint8).copy())
        entries[name] = encoded.entry
    save_file(blobs, str(file), metadata=METADATA)
    return entries


def read_encoded(file: Path, manifest: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Decode every tensor the manifest lists from ``file``; PrunekitError naming the tensor
    for anything that does not decode to exactly its declared dtype and shape."""
    state: dict[str, torch.Tensor] = {}
    try:
        with safe_open(str(file), framework="pt") as f:
            stored = set(f.keys())
            for name, entry in manifest["tensors"].items():
                if "tied_to" in entry:
                    continue
                if name not in stored:
                    raise PrunekitError(f"tensor {name!r} is missing from {file.name}")
                blob = f.get_tensor(name)
                if blob.dtype != torch.uint8 or blob.dim() != 1 or blob.numel() != entry["bytes"]:
                    raise PrunekitError(f"tensor {name!r} is not {entry['bytes']} encoded bytes")
                try:
                    state[name] = tensors.decode(
                        entry, blob.numpy().tobytes(), dtype_of(entry), entry["shape"]
                    )
                except PrunekitError as e:
                    raise PrunekitError(f"tensor {name!r}: {e}") from None
    except (SafetensorError, OSError, RuntimeError) as e:
        raise PrunekitError(f"{file}: cannot be read ({e}); the file is corrupted") from None
    except PrunekitError as e:
        raise PrunekitError(f"{file}: {e}; the artifact is corrupted") from None
    for name, entry in manifest["tensors"].items():
        if "tied_to" in entry:
            state[name] = state[entry["tied_to"]]
    return state


def read_plain(file: Path, manifest: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The tensors of a plain safetensors file (a Hugging Face one omits tied copies)."""
    try:
        stored = load_file(str(file))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise PrunekitError(f"{file}: cannot be read ({e}); the file is corrupted") from None
    state: dict[str, torch.Tensor] = {}
    for name, entry in manifest["tensors"].items():
        t = stored.get(entry.get("tied_to", name))
        if t is None or list(t.shape) != entry["shape"] or t.dtype != dtype_of(entry):
            raise PrunekitError(
                f"{file}: tensor {name!r} is missing or has the wrong shape or dtype; the "
                f"artifact is corrupted"
            )
        state[name] = t
    return state


def storage_key(t: torch.Tensor) -> tuple[Any, ...] | None:
    """What tied tensors share (None for an empty tensor, which has no storage to share)."""
    if t.numel() == 0:
        return None
    return (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape),
            tuple(t.stride()), t.dtype)  # fmt: skip
