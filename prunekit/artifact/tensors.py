"""How one tensor is stored: a layout (which elements) and the symbol streams of its values.

Layouts (``encoding``):
  ``dense``     every element;
  ``bitmask``   a 1-bit stream over all elements (1 = stored), then the stored elements;
  ``relative``  a stream of gaps (zeros skipped before each stored element, 4, 5 or 8 bits),
                then the stored elements; a gap too long for its width is bridged by filler
                entries whose value is zero (Deep Compression, Han et al. 2016).
Values (``values``):
  ``int``       integer and bool tensors: ``value - offset`` bit-packed at the width the range
                ``max - min`` needs (5 bits for codebook indices 0..31);
  ``planes``    floats: byte ``j`` of every value in stream ``j``: the sign/exponent byte of a
                weight compresses well, the mantissa bytes barely, so each gets its own codec;
  ``raw``       floats: the values' bytes as one stream (less manifest for tiny tensors).
Every combination is encoded and the cheapest kept (payload plus its manifest entry). An element
is zero only when all its bytes are, so -0.0 and NaN payloads round-trip bit for bit.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from prunekit.artifact import bitpack, streams
from prunekit.errors import PrunekitError, quote

LAYOUTS = ("dense", "bitmask", "relative")
GAP_BITS = (4, 5, 8)
MAX_GAP_BITS = 16
# One stream instead of one per byte saves manifest lines; past a few KB the planes always win.
_RAW_LIMIT = 4096


@dataclass(frozen=True)
class Encoded:
    """A tensor's manifest fields (``encoding``, ``values``, [``offset``], ``streams``, ``bytes``)
    and the bytes of its streams, concatenated in the order ``streams`` lists them."""

    entry: dict[str, Any]
    payload: bytes

    @property
    def cost(self) -> int:
        return len(self.payload) + len(json.dumps(self.entry))


def is_int(dtype: torch.dtype) -> bool:
    """Integer and bool tensors are stored as ``int`` values; everything else byte-wise."""
    return not (dtype.is_floating_point or dtype.is_complex)


def encode(t: torch.Tensor, layouts: tuple[str, ...] = LAYOUTS) -> Encoded:
    """The cheapest encoding of ``t`` (any shape; its dtype decides the value streams) among
    ``layouts`` (all by default; naming fewer forces one, as tests do).

    Candidates are compared on estimated sizes (``streams.estimate``); only the winner is
    encoded for good."""
    raw = _raw(t)
    coder = _Coder()
    plans = _value_plans("dense", [], raw, t.dtype) if "dense" in layouts else []
    stored = raw.any(axis=1)
    zeros = raw.shape[0] - int(stored.sum())
    # Dropping the zeros pays only when they outweigh a bit of mask per element.
    if zeros * 8 * raw.shape[1] > raw.shape[0] or layouts != LAYOUTS:
        kept = np.flatnonzero(stored)
        mask = (1, stored.astype(np.uint8))
        bitmask = _value_plans("bitmask", [mask], raw[kept], t.dtype)
        if "bitmask" in layouts:
            plans += bitmask
        # The relative layouts store the same values plus zero fillers, so the bitmask's cost
        # per value picks the gap width; only that width's values are encoded.
        values_cost = min(coder.cost(p) for p in bitmask) - coder.size(mask)
        per_value = values_cost / max(kept.size, 1)
        options = [(bits, *_gaps(kept, bits)) for bits in GAP_BITS]
        bits, gaps, at = min(options, key=lambda o: coder.size(o[:2]) + per_value * o[1].size)
        values = np.zeros((gaps.size, raw.shape[1]), dtype=np.uint8)
        values[at] = raw[kept]
        if "relative" in layouts:
            plans += _value_plans("relative", [(bits, gaps)], values, t.dtype)
    return coder.build(min(plans, key=coder.cost))


def decode(
    entry: dict[str, Any], payload: bytes, dtype: torch.dtype, shape: list[int]
) -> torch.Tensor:
    """The tensor an ``Encoded`` describes, checked against ``dtype`` and ``shape`` at every step;
    PrunekitError for anything inconsistent. Allocates at most the tensor's own size."""
    numel = math.prod(shape)
    width = torch.empty((), dtype=dtype).element_size()
    layout, mode = entry.get("encoding"), entry.get("values")
    if layout not in LAYOUTS:
        raise PrunekitError(f"unknown encoding {quote(layout)} (knows {', '.join(LAYOUTS)})")
    expected_mode = ("int",) if is_int(dtype) else ("planes", "raw")
    if mode not in expected_mode:
        raise PrunekitError(f"values {quote(mode)} do not fit dtype {dtype}")
    specs = _stream_specs(entry, len(payload))
    n_head = 0 if layout == "dense" else 1
    n_values = width if mode == "planes" else 1
    if len(specs) != n_head + n_values:
        raise PrunekitError(f"{layout}/{mode} needs {n_head + n_values} streams; got {len(specs)}")
    chunks = _split(payload, specs)
    if layout == "dense":
        stored = None
        count = numel
    elif layout == "bitmask":
        mask = _decode(specs[0], chunks[0], bits=(1,), count=numel).astype(bool)
        stored = np.flatnonzero(mask)
        count = stored.size
    else:
        bits, entries = specs[0]["bits"], specs[0]["count"]
        if not 1 <= bits <= MAX_GAP_BITS or entries > numel:
            raise PrunekitError(f"gap stream of {entries} {bits}-bit gaps for {numel} elements")
        gaps = _decode(specs[0], chunks[0], bits=(bits,), count=entries)
        stored = np.cumsum(gaps.astype(np.int64) + 1) - 1
        if stored.size and stored[-1] >= numel:
            raise PrunekitError(f"gaps reach element {stored[-1]} of a {numel}-element tensor")
        count = entries
    values = _decode_values(mode, specs[n_head:], chunks[n_head:], count, width, dtype, entry)
    if stored is None:
        out = values
    else:
        out = np.zeros((numel, width), dtype=np.uint8)
        out[stored] = values
    return _tensor(out, dtype, shape)


# --------------------------------------------------------------------------- encoding


def _raw(t: torch.Tensor) -> np.ndarray:
    """``[numel, element_size]`` uint8: every element's bytes (little-endian, as in memory)."""
    flat = t.detach().cpu().contiguous().reshape(-1)
    width = flat.element_size()
    if flat.numel() == 0:
        return np.zeros((0, width), dtype=np.uint8)
    return flat.view(torch.uint8).numpy().reshape(-1, width)


def _gaps(kept: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """``(gaps, at)``: the gap stream for stored positions ``kept`` and where each stored element
    sits among the entries. A filler (gap ``2**bits - 1``, then itself) covers ``2**bits``
    zeros."""
    span = 1 << bits
    before = np.diff(kept, prepend=-1) - 1
    fillers = before // span
    at = np.cumsum(fillers + 1) - 1
    gaps = np.full(int(at[-1]) + 1 if at.size else 0, span - 1, dtype=np.uint64)
    gaps[at] = before - fillers * span
    return gaps, at


Stream = tuple[int, np.ndarray]  # (bits, symbols)


@dataclass(frozen=True)
class _Plan:
    """A candidate encoding before its streams are coded: layout, values mode, streams."""

    layout: str
    mode: str
    extra: dict[str, Any]
    streams: list[Stream]


def _value_plans(layout: str, head: list[Stream], values: np.ndarray, dtype: torch.dtype):
    if is_int(dtype):
        offset, bits, symbols = _offset_symbols(values, dtype)
        return [_Plan(layout, "int", {"offset": offset}, [*head, (bits, symbols)])]
    plans = []
    if values.shape[1] == 1 or values.size <= _RAW_LIMIT:
        plans.append(_Plan(layout, "raw", {}, [*head, (8, values.reshape(-1))]))
    if values.shape[1] > 1:
        planes = [(8, np.ascontiguousarray(values[:, j])) for j in range(values.shape[1])]
        plans.append(_Plan(layout, "planes", {}, [*head, *planes]))
    return plans


class _Coder:
    """Estimates and codes streams, remembering each result: candidates share streams (the
    mask, the gaps), and only the winning plan is coded for good."""

    def __init__(self) -> None:
        self._estimates: dict[tuple[int, int], tuple[str, int]] = {}

    def estimate(self, stream: Stream) -> tuple[str, int]:
        bits, symbols = stream
        key = (id(symbols), bits)
        if key not in self._estimates:
            self._estimates[key] = streams.estimate(symbols, bits)
        return self._estimates[key]

    def size(self, stream: Stream) -> int:
        return self.estimate(stream)[1]

    def cost(self, plan: _Plan) -> int:
        """About the ``Encoded.cost`` of ``plan``: estimated payload plus its manifest entry."""
        specs = [self._spec(s, *self.estimate(s)) for s in plan.streams]
        size = sum(spec["bytes"] for spec in specs)
        return size + len(json.dumps(self._entry(plan, specs, size)))

    def build(self, plan: _Plan) -> Encoded:
        coded = [streams.encode(symbols, bits) for bits, symbols in plan.streams]
        specs = [self._spec(s, c, len(p)) for s, (c, p) in zip(plan.streams, coded, strict=True)]
        payload = b"".join(p for _, p in coded)
        return Encoded(self._entry(plan, specs, len(payload)), payload)

    @staticmethod
    def _spec(stream: Stream, codec: str, size: int) -> dict[str, Any]:
        return {"codec": codec, "bits": stream[0], "count": int(stream[1].size), "bytes": size}

    @staticmethod
    def _entry(plan: _Plan, specs: list[dict[str, Any]], size: int) -> dict[str, Any]:
        return {"encoding": plan.layout, "values": plan.mode, **plan.extra, "streams": specs,
                "bytes": size}  # fmt: skip


def _offset_symbols(values: np.ndarray, dtype: torch.dtype) -> tuple[int, int, np.ndarray]:
    """``(offset, bits, symbols)``: ``symbols = value - offset`` (offset = the minimum), computed
    modulo ``2**(8*width)`` so even a full int64 range needs no wider type."""
    width = values.shape[1]
    unsigned = np.ascontiguousarray(values).view(f"<u{width}").reshape(-1).astype(np.uint64)
    if unsigned.size == 0:
        return 0, 0, unsigned
    signed = dtype.is_signed and dtype is not torch.bool
    as_ints = np.ascontiguousarray(values).view(f"<i{width}").reshape(-1) if signed else unsigned
    offset = int(as_ints.min())
    symbols = (unsigned - np.uint64(offset % (1 << 8 * width))) & np.uint64(_ones(width))
    return offset, bitpack.bit_width(int(symbols.max())), symbols


def _ones(width: int) -> int:
    return (1 << 8 * width) - 1


# --------------------------------------------------------------------------- decoding


def _stream_specs(entry: dict[str, Any], size: int) -> list[dict[str, int | str]]:
    specs = entry.get("streams")
    if not isinstance(specs, list) or not 1 <= len(specs) <= 17:
        raise PrunekitError("streams must be a list of 1..17 stream descriptions")
    for spec in specs:
        if not isinstance(spec, dict) or not isinstance(spec.get("codec"), str):
            raise PrunekitError(f"malformed stream description {quote(spec)}")
        for key in ("bits", "count", "bytes"):
            value = spec.get(key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise PrunekitError(
                    f"stream {key} must be a non-negative integer; got {quote(value)}"
                )
    if sum(s["bytes"] for s in specs) != size:
        raise PrunekitError(f"streams declare {sum(s['bytes'] for s in specs)} bytes; the "
                            f"file holds {size}")  # fmt: skip
    return specs


def _split(payload: bytes, specs: list[dict]) -> list[bytes]:
    ends = list(itertools.accumulate((s["bytes"] for s in specs), initial=0))
    return [payload[a:b] for a, b in itertools.pairwise(ends)]


def _decode(spec: dict, chunk: bytes, bits: tuple[int, ...], count: int) -> np.ndarray:
    if spec["bits"] not in bits or spec["count"] != count:
        raise PrunekitError(
            f"stream of {spec['count']} {spec['bits']}-bit symbols where {count} of "
            f"{'/'.join(map(str, bits))} bits belong"
        )
    return streams.decode(spec["codec"], chunk, count, spec["bits"])


def _decode_values(
    mode: str,
    specs: list[dict],
    chunks: list[bytes],
    count: int,
    width: int,
    dtype: torch.dtype,
    entry: dict[str, Any],
) -> np.ndarray:
    if mode == "raw":
        return _decode(specs[0], chunks[0], bits=(8,), count=count * width).reshape(count, width)
    if mode == "planes":
        planes = [_decode(s, c, bits=(8,), count=count) for s, c in zip(specs, chunks, strict=True)]
        return np.stack(planes, axis=1) if planes else np.zeros((count, width), dtype=np.uint8)
    offset = entry.get("offset")
    info = torch.iinfo(dtype) if dtype is not torch.bool else None
    low, high = (info.min, info.max) if info else (0, 1)
    if not isinstance(offset, int) or isinstance(offset, bool) or not low <= offset <= high:
        raise PrunekitError(f"offset {quote(offset)} is outside {dtype}'s range")
    symbols = _decode(specs[0], chunks[0], bits=tuple(range(8 * width + 1)), count=count)
    unsigned = (symbols.astype(np.uint64) + np.uint64(offset % (1 << 8 * width))) & np.uint64(
        _ones(width)
    )
    if dtype is torch.bool and unsigned.size and unsigned.max() > 1:
        raise PrunekitError("a bool tensor holds a value other than 0 or 1")
    return unsigned.astype(f"<u{width}").view(np.uint8).reshape(count, width)


def _tensor(values: np.ndarray, dtype: torch.dtype, shape: list[int]) -> torch.Tensor:
    if values.size == 0:
        return torch.empty(shape, dtype=dtype)
    return torch.frombuffer(bytearray(values.tobytes()), dtype=dtype).reshape(shape)
