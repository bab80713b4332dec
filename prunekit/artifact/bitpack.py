"""Fixed-width bit packing: ``n`` unsigned ``bits``-bit symbols in ``ceil(n*bits/8)`` bytes.

Symbols are laid out least significant bit first, little-endian, so 8-, 16-, 32- and 64-bit
symbols are exactly the integers' little-endian bytes (packing them is a plain copy). Other widths
go through a bit matrix, a chunk at a time so memory stays a few tens of MB for any tensor.
"""

from __future__ import annotations

import numpy as np

MAX_BITS = 64
_BYTE_WIDTHS = (8, 16, 32, 64)
# A multiple of 8 symbols per chunk: every chunk then ends on a byte boundary.
_CHUNK = 1 << 16


def packed_size(count: int, bits: int) -> int:
    """Bytes that ``count`` symbols of ``bits`` bits take packed."""
    return (count * bits + 7) // 8


def bit_width(max_symbol: int) -> int:
    """The fewest bits that hold every value in ``0..max_symbol`` (0 when it is 0)."""
    return int(max_symbol).bit_length()


def pack(symbols: np.ndarray, bits: int) -> bytes:
    """``symbols``: 1-D unsigned integers, each ``< 2**bits``; returns the packed bytes."""
    assert 0 <= bits <= MAX_BITS and symbols.ndim == 1
    if bits == 0 or symbols.size == 0:
        return b""
    if bits in _BYTE_WIDTHS:
        return symbols.astype(f"<u{bits // 8}", copy=False).tobytes()
    shifts = np.arange(bits, dtype=np.uint64)
    parts = []
    for start in range(0, symbols.size, _CHUNK):
        chunk = symbols[start : start + _CHUNK].astype(np.uint64, copy=False)
        matrix = ((chunk[:, None] >> shifts) & np.uint64(1)).astype(np.uint8)
        parts.append(np.packbits(matrix.ravel(), bitorder="little"))
    return np.concatenate(parts).tobytes()


def unpack(data: bytes | np.ndarray, count: int, bits: int) -> np.ndarray:
    """The ``count`` symbols packed in ``data`` (exactly ``packed_size(count, bits)`` bytes), as
    uint64 (uint8 for ``bits <= 8``)."""
    buf = np.frombuffer(data, dtype=np.uint8) if isinstance(data, bytes) else data
    assert 0 <= bits <= MAX_BITS and buf.size == packed_size(count, bits)
    out_dtype = np.uint8 if bits <= 8 else np.uint64
    if bits == 0:
        return np.zeros(count, dtype=out_dtype)
    if bits in _BYTE_WIDTHS:
        return np.frombuffer(buf.tobytes(), dtype=f"<u{bits // 8}").astype(out_dtype)
    out = np.empty(count, dtype=out_dtype)
    weights = np.left_shift(np.uint64(1), np.arange(bits, dtype=np.uint64))
    step = _CHUNK * bits // 8
    for i, start in enumerate(range(0, count, _CHUNK)):
        n = min(_CHUNK, count - start)
        raw = np.unpackbits(buf[i * step : i * step + step], bitorder="little")
        matrix = raw[: n * bits].reshape(n, bits).astype(np.uint64)
        out[start : start + n] = (matrix * weights).sum(axis=1, dtype=np.uint64)
    return out
