"""Canonical Huffman coding of a stream of ``bits``-bit symbols (``bits`` in 2..16).

Payload: ``u32 n`` | ``n`` bytes: zstd of the code length of every symbol ``0..2**bits-1`` (4 bits
each; 0 = unused) | ``u32`` bit offset of each block after the first | the codes, most
significant bit first. Only the lengths are stored: canonical codes follow from them (shorter
codes first, ties by symbol). Codes are at most 15 bits, so a decoder table has 32 K entries.

Huffman decoding is sequential, which numpy cannot vectorise; the stream is therefore cut into
blocks of ``block_size(count)`` symbols whose start offsets are stored, and all blocks are decoded
in lock-step, one numpy step per symbol of a block. The offsets cost under 0.07 bits per symbol.
"""

from __future__ import annotations

import heapq
import struct
from dataclasses import dataclass

import numpy as np

from prunekit.artifact import bitpack, zstd
from prunekit.errors import PrunekitError

MAX_CODE_BITS = 15
MIN_BITS, MAX_BITS = 2, 16
_U32 = struct.Struct("<I")
_CHUNK = 1 << 20


def block_size(count: int) -> int:
    """Symbols per independently decodable block: at most 4096 blocks, at least 512 symbols."""
    return max(512, -(-count // 4096))


def code_lengths(counts: np.ndarray) -> np.ndarray:
    """Code length per symbol (0 for an unused one) from symbol counts, at most 15 bits.

    A lone symbol gets a 1-bit code. When the optimal code is deeper than 15 bits the counts are
    halved (never below 1) and the code rebuilt: a flatter distribution gives a shallower tree
    and costs a fraction of a percent. Needs at most ``2**15`` used symbols."""
    lengths = np.zeros(counts.size, dtype=np.uint8)
    used = np.flatnonzero(counts)
    assert 0 < used.size <= 1 << MAX_CODE_BITS
    if used.size == 1:
        lengths[used] = 1
        return lengths
    weights = counts[used].astype(np.int64)
    while True:
        depths = _depths(weights)
        if depths.max() <= MAX_CODE_BITS:
            lengths[used] = depths
            return lengths
        weights = (weights + 1) // 2


def _depths(weights: np.ndarray) -> np.ndarray:
    # Classic two-smallest merging; (weight, node id) keeps ties, and so the file, deterministic.
    n = weights.size
    heap = [(int(w), i) for i, w in enumerate(weights)]
    heapq.heapify(heap)
    parent = np.zeros(2 * n - 1, dtype=np.int64)
    node = n
    while len(heap) > 1:
        wa, a = heapq.heappop(heap)
        wb, b = heapq.heappop(heap)
        parent[a] = parent[b] = node
        heapq.heappush(heap, (wa + wb, node))
        node += 1
    depth = np.zeros(2 * n - 1, dtype=np.int64)
    for i in range(2 * n - 3, -1, -1):  # a parent's id is above its children's
        depth[i] = depth[parent[i]] + 1
    return depth[:n]


def canonical(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """``(symbols, lengths, codes, max_len)`` of the canonical code, in code order.

    Raises PrunekitError unless the lengths form a complete prefix code (Kraft sum exactly 1),
    or a single 1-bit code: any other set would leave bit patterns decoding to nothing, or
    two symbols sharing one."""
    symbols = np.flatnonzero(lengths)
    if symbols.size == 0 or int(lengths.max()) > MAX_CODE_BITS:
        raise PrunekitError("Huffman code lengths are empty or longer than 15 bits")
    lens = lengths[symbols].astype(np.int64)
    order = np.lexsort((symbols, lens))
    symbols, lens = symbols[order], lens[order]
    max_len = int(lens[-1])
    spans = np.left_shift(1, max_len - lens)
    kraft = int(spans.sum())
    if kraft != 1 << max_len and not (symbols.size == 1 and max_len == 1):
        raise PrunekitError(f"Huffman code lengths do not form a prefix code (Kraft sum "
                            f"{kraft}/{1 << max_len})")  # fmt: skip
    # A canonical code, left-aligned to max_len bits, is the sum of the spans before it.
    codes = (np.cumsum(spans) - spans) >> (max_len - lens)
    return symbols, lens, codes, max_len


@dataclass(frozen=True)
class Code:
    """The canonical code built for one stream: its stored table and each symbol's code."""

    table: bytes  # zstd of the 4-bit code lengths
    code_of: np.ndarray  # symbol -> code (int64)
    len_of: np.ndarray  # symbol -> code length (int64, 0 for unused symbols)
    size: int  # bytes of the whole payload ``encode`` writes


def build(symbols: np.ndarray, bits: int) -> Code | None:
    """The code for ``symbols`` (each ``< 2**bits``) and its exact payload size, without
    writing the bits; None when it cannot be coded (empty, over ``2**15`` distinct symbols, or
    over ``2**32`` bits)."""
    assert MIN_BITS <= bits <= MAX_BITS
    counts = np.bincount(symbols, minlength=1 << bits)
    if symbols.size == 0 or np.count_nonzero(counts) > 1 << MAX_CODE_BITS:
        return None
    lengths = code_lengths(counts)
    total_bits = int(counts @ lengths.astype(np.int64))
    if total_bits >= 1 << 32:
        return None
    table = zstd.compress(bitpack.pack(lengths, 4))
    order, lens, codes, _ = canonical(lengths)
    code_of = np.zeros(1 << bits, dtype=np.int64)
    len_of = np.zeros(1 << bits, dtype=np.int64)
    code_of[order], len_of[order] = codes, lens
    n_blocks = -(-symbols.size // block_size(symbols.size))
    size = _U32.size + len(table) + 4 * (n_blocks - 1) + (total_bits + 7) // 8
    return Code(table, code_of, len_of, size)


def encode(symbols: np.ndarray, bits: int, code: Code | None = None) -> bytes | None:
    """The Huffman payload of ``symbols`` (with ``code`` from ``build``, or built here); None
    when ``build`` gives none."""
    code = code or build(symbols, bits)
    if code is None:
        return None
    lens = code.len_of[symbols]
    ends = np.cumsum(lens)
    step = block_size(symbols.size)
    offsets = ends[step - 1 : -1 : step].astype("<u4")
    stream = _write_codes(code.code_of[symbols], lens, ends)
    payload = b"".join([_U32.pack(len(code.table)), code.table, offsets.tobytes(), stream])
    assert len(payload) == code.size
    return payload


def _write_codes(codes: np.ndarray, lens: np.ndarray, ends: np.ndarray) -> bytes:
    """The codes one after another, most significant bit first.

    A code (at most 15 bits) starting at bit ``s`` lies within the 3 bytes from ``s // 8``;
    codes never share a bit, so adding each code's byte contributions (bincount with weights)
    is the same as OR-ing them, and needs no Python loop over symbols."""
    n_bytes = (int(ends[-1]) + 7) // 8
    out = np.zeros(n_bytes + 2, dtype=np.uint8)
    for lo in range(0, codes.size, _CHUNK):
        hi = min(lo + _CHUNK, codes.size)
        starts = ends[lo:hi] - lens[lo:hi]
        first = int(starts[0]) >> 3
        byte = (starts >> 3) - first
        window = codes[lo:hi] << (24 - lens[lo:hi] - (starts & 7))
        size = int(byte[-1]) + 3
        part = np.zeros(size, dtype=np.float64)
        for k, shift in enumerate((16, 8, 0)):
            part += np.bincount(byte + k, weights=(window >> shift) & 255, minlength=size)
        out[first : first + size] += part.astype(np.uint8)
    return out[:n_bytes].tobytes()


def decode(payload: bytes, count: int, bits: int) -> np.ndarray:
    """The ``count`` symbols in a payload from ``encode``; PrunekitError when it is damaged."""
    if not MIN_BITS <= bits <= MAX_BITS:
        raise PrunekitError(f"Huffman symbols must be {MIN_BITS}..{MAX_BITS} bits; got {bits}")
    if len(payload) < _U32.size:
        raise PrunekitError("Huffman payload is truncated")
    (table_len,) = _U32.unpack_from(payload)
    table_end = _U32.size + table_len
    n_blocks = -(-count // block_size(count))
    stream_start = table_end + 4 * max(n_blocks - 1, 0)
    if count == 0 or stream_start > len(payload):
        raise PrunekitError("Huffman payload is truncated or declares no symbols")
    nibbles = zstd.decompress(payload[_U32.size : table_end], bitpack.packed_size(1 << bits, 4))
    symbols, lens, _, max_len = canonical(bitpack.unpack(nibbles, 1 << bits, 4))
    offsets = np.frombuffer(payload[table_end:stream_start], dtype="<u4").astype(np.int64)
    stream = payload[stream_start:]
    if count > 8 * len(stream):  # every code is at least one bit
        raise PrunekitError(f"Huffman stream of {len(stream)} bytes cannot hold {count} symbols")
    starts = np.concatenate([[0], offsets])
    if np.any(np.diff(starts) < 0) or starts[-1] > 8 * len(stream):
        raise PrunekitError("Huffman block offsets are out of order or past the stream's end")
    spans = np.left_shift(1, max_len - lens)
    table_sym = np.zeros(1 << max_len, dtype=np.uint16)
    table_len = np.zeros(1 << max_len, dtype=np.int64)  # 0: a pattern no code starts with
    filled = int(spans.sum())
    table_sym[:filled] = np.repeat(symbols, spans)
    table_len[:filled] = np.repeat(lens, spans)
    out = _decode_blocks(stream, starts, count, table_sym, table_len, max_len)
    return out.astype(np.uint8) if bits <= 8 else out


def _decode_blocks(
    stream: bytes,
    starts: np.ndarray,
    count: int,
    table_sym: np.ndarray,
    table_len: np.ndarray,
    max_len: int,
) -> np.ndarray:
    step = block_size(count)
    n_bytes = len(stream)
    buf = np.frombuffer(stream + bytes(4), dtype=np.uint8)
    out = np.empty(count, dtype=np.uint16)
    pos = starts.copy()
    first = np.arange(starts.size, dtype=np.int64) * step
    last_len = count - (starts.size - 1) * step
    mask = (1 << max_len) - 1
    for k in range(min(step, count)):
        active = starts.size if k < last_len else starts.size - 1
        p = pos[:active]
        byte = np.minimum(p >> 3, n_bytes)
        word = (
            (buf[byte].astype(np.int64) << 24)
            | (buf[byte + 1].astype(np.int64) << 16)
            | (buf[byte + 2].astype(np.int64) << 8)
            | buf[byte + 3]
        )
        window = (word >> (32 - max_len - (p & 7))) & mask
        lens = table_len[window]
        if not lens.all():
            raise PrunekitError("Huffman stream holds a bit pattern that is no code")
        out[first[:active] + k] = table_sym[window]
        pos[:active] = p + lens
    ends_ok = np.array_equal(pos[:-1], starts[1:])
    if not ends_ok or not 8 * n_bytes - 8 < pos[-1] <= 8 * n_bytes:
        raise PrunekitError("Huffman blocks do not end where the next one starts")
    return out
