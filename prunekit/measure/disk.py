"""Bytes on disk: an artifact's size per tensor and per kind of storage, bits per non-zero.

Kinds add up to the directory's size: ``dense`` (values stored as they are), ``sparse`` (masks,
gaps and the kept values of bitmask/relative layouts, not entropy coded), ``packed`` (integer
values bit-packed at their width), ``entropy-coded`` (any stream kept as zstd or Huffman), and
``overhead`` (manifest, safetensors header, config and tokenizer files).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunekit.artifact.io import artifact_bytes, read_manifest, save
from prunekit.artifact.manifest import DTYPES

KINDS = ("dense", "sparse", "packed", "entropy-coded", "overhead")


@dataclass
class ArtifactSize:
    """``bytes``: the whole directory; ``kinds``: bytes per kind (see the module docstring);
    ``tensors``: name -> ``{"bytes", "encoding"}`` (the chain, e.g. ``bitmask(pack+zstd) +
    planes(huffman/pack/pack/pack+zstd)``); ``bits_per_nonzero``: 8 x the tensors' bytes over
    the non-zero values they hold (None when there are none)."""

    bytes: int
    kinds: dict[str, int] = field(default_factory=dict)
    tensors: dict[str, dict[str, Any]] = field(default_factory=dict)
    bits_per_nonzero: float | None = None


def artifact_breakdown(path: str | Path) -> ArtifactSize:
    """The size breakdown of the artifact directory ``path`` written by ``pk.save``."""
    manifest = read_manifest(path)
    total = artifact_bytes(path)
    kinds = dict.fromkeys(KINDS, 0)
    tensors: dict[str, dict[str, Any]] = {}
    nonzeros = 0
    for name, entry in manifest["tensors"].items():
        if "tied_to" in entry:
            tensors[name] = {"bytes": 0, "encoding": f"tied to {entry['tied_to']}"}
            continue
        nonzeros += entry.get("nonzeros", 0)
        if "streams" not in entry:  # plain storage: the tensor as it is
            size = entry["numel"] * _itemsize(entry["dtype"])
            kinds["dense"] += size
            tensors[name] = {"bytes": size, "encoding": f"plain {entry['dtype']}"}
            continue
        for kind, size in _stream_kinds(entry):
            kinds[kind] += size
        tensors[name] = {"bytes": entry["bytes"], "encoding": chain(entry)}
    stored = sum(t["bytes"] for t in tensors.values())
    kinds["overhead"] = total - stored
    bits = 8 * stored / nonzeros if nonzeros else None
    return ArtifactSize(total, kinds, tensors, bits)


def saved_sizes(path: str | Path) -> dict[str, Any]:
    """What a saved artifact says about its model without the model being built: parameters,
    non-zeros, sparsity (from the manifest) and the bytes on disk (:func:`artifact_breakdown`),
    as keyword arguments of :class:`prunekit.measure.Measurement`."""
    summary = read_manifest(path).get("sparsity") or {}
    size = artifact_breakdown(path)
    params = int(summary.get("params", 0))
    return {
        "params": params,
        "nonzeros": int(summary.get("nonzeros", 0)),
        "sparsity": float(summary.get("sparsity", 0.0)),
        "prunable_sparsity": float(summary.get("prunable_sparsity", 0.0)),
        "dense_bytes": 4 * params,
        "artifact_bytes": size.bytes,
        "bits_per_nonzero": size.bits_per_nonzero,
        "artifact_kinds": size.kinds,
        "artifact_tensors": size.tensors,
    }


def measure_artifact(model: nn.Module) -> ArtifactSize:
    """Save ``model`` to a temporary directory and break down its size."""
    with tempfile.TemporaryDirectory(prefix="prunekit-size-") as tmp:
        return artifact_breakdown(save(model, Path(tmp) / "model"))


def chain(entry: dict[str, Any]) -> str:
    """A readable encoding chain, e.g. ``relative 5-bit gaps(huffman) + int 4-bit(pack)``."""
    streams = entry["streams"]
    layout, mode = entry["encoding"], entry["values"]
    head = ""
    if layout == "bitmask":
        head, streams = f"bitmask({streams[0]['codec']}) + ", streams[1:]
    elif layout == "relative":
        gaps = streams[0]
        head, streams = f"relative {gaps['bits']}-bit gaps({gaps['codec']}) + ", streams[1:]
    if mode == "int":
        values = f"int {streams[0]['bits']}-bit({streams[0]['codec']})"
    elif mode == "raw":
        values = f"bytes({streams[0]['codec']})"
    else:
        values = "planes(" + "/".join(s["codec"] for s in streams) + ")"
    return head + values if head else f"dense {values}"


def _stream_kinds(entry: dict[str, Any]) -> list[tuple[str, int]]:
    plain = (
        "sparse"
        if entry["encoding"] != "dense"
        else "packed"
        if entry["values"] == "int"
        else "dense"
    )
    return [
        ("entropy-coded" if s["codec"] != "pack" else plain, s["bytes"]) for s in entry["streams"]
    ]


def _itemsize(dtype: str) -> int:
    return torch.empty((), dtype=DTYPES[dtype]).element_size()
