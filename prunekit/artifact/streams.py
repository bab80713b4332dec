"""One stream of ``count`` unsigned ``bits``-bit symbols, stored by the smallest of four codecs.

``pack``          the symbols bit-packed at their width (no entropy coding),
``pack+zstd``     the packed bytes in a zstd frame,
``huffman``       a canonical Huffman code over the symbols themselves (2..16-bit symbols),
``pack+huffman``  a Huffman code over the packed bytes, for narrow symbols (1..7 bits) where one
                  symbol per code would cost at least a bit each.
Each is measured on the actual stream and the shortest kept, ``pack`` on a tie, so entropy
coding appears only where it pays. zstd is first tried at a fast level; the slow strong level runs
only when the fast frame comes within reach of the best other codec.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

from prunekit.artifact import bitpack, huffman, zstd
from prunekit.errors import PrunekitError

CODECS = ("pack", "pack+zstd", "huffman", "pack+huffman")
# Below this many bytes a zstd frame's header or a Huffman table cannot be recovered.
_MIN_ENTROPY_BYTES = 16
# The strong level rarely beats the fast one by more than this factor.
_STRONG_GAIN = 1.25


def encode(symbols: np.ndarray, bits: int) -> tuple[str, bytes]:
    """``(codec, payload)`` for 1-D unsigned ``symbols`` each below ``2**bits``."""
    codec, _, make = _choose(symbols, bits, strong=True)
    return codec, make()


def estimate(symbols: np.ndarray, bits: int) -> tuple[str, int]:
    """``(codec, payload bytes)`` that ``encode`` would give, about: zstd at a fast level only,
    Huffman sized from its code without writing the bits. For choosing between layouts."""
    codec, size, _ = _choose(symbols, bits, strong=False)
    return codec, size


def _choose(symbols: np.ndarray, bits: int, strong: bool) -> tuple[str, int, Callable[[], bytes]]:
    packed = bitpack.pack(symbols, bits)
    best: tuple[str, int, Callable[[], bytes]] = ("pack", len(packed), lambda: packed)
    if len(packed) < _MIN_ENTROPY_BYTES:
        return best
    candidates = []
    if huffman.MIN_BITS <= bits <= huffman.MAX_BITS:
        candidates.append(("huffman", symbols, bits))
    if bits < 8:
        candidates.append(("pack+huffman", np.frombuffer(packed, dtype=np.uint8), 8))
    for codec, stream, width in candidates:
        code = huffman.build(stream, width)
        if code is not None and code.size < best[1]:
            best = (codec, code.size, functools.partial(huffman.encode, stream, width, code))
    frame = zstd.compress(packed, strong=False)
    if strong and len(frame) < _STRONG_GAIN * best[1]:
        frame = min(frame, zstd.compress(packed), key=len)
    if len(frame) < best[1]:
        best = ("pack+zstd", len(frame), lambda: frame)
    return best


def decode(codec: str, payload: bytes, count: int, bits: int) -> np.ndarray:
    """The ``count`` symbols of a stream written by ``encode``; PrunekitError when the payload
    does not hold exactly that."""
    if not 0 <= bits <= bitpack.MAX_BITS:
        raise PrunekitError(f"symbol width must be 0..{bitpack.MAX_BITS} bits; got {bits}")
    size = bitpack.packed_size(count, bits)
    if codec == "pack":
        if len(payload) != size:
            raise PrunekitError(f"{len(payload)} bytes cannot hold {count} {bits}-bit symbols")
        return bitpack.unpack(payload, count, bits)
    if codec == "pack+zstd":
        return bitpack.unpack(zstd.decompress(payload, size), count, bits)
    if codec == "huffman":
        return huffman.decode(payload, count, bits)
    if codec == "pack+huffman":
        if not 1 <= bits < 8:
            raise PrunekitError(f"pack+huffman codes 1..7-bit symbols; got {bits} bits")
        packed = huffman.decode(payload, size, 8)
        return bitpack.unpack(packed, count, bits)
    raise PrunekitError(f"unknown codec {codec!r} (knows {', '.join(CODECS)})")
