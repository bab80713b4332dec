"""Bit packing, Huffman and zstd: exact round trips on edge cases, and the smallest one chosen."""

from __future__ import annotations

import numpy as np
import pytest

from prunekit.artifact import bitpack, huffman, streams, zstd
from prunekit.errors import PrunekitError


def _edge_streams(bits: int) -> list[np.ndarray]:
    """Empty, one symbol, all zeros, all maximal, and a random mix, for a width of ``bits``."""
    top = (1 << bits) - 1
    rng = np.random.default_rng(bits)
    mixed = rng.integers(0, top, 1000, dtype=np.uint64, endpoint=True)
    mixed[:2] = [0, top]
    return [
        np.zeros(0, dtype=np.uint64),
        np.array([top], dtype=np.uint64),
        np.zeros(777, dtype=np.uint64),
        np.full(333, top, dtype=np.uint64),
        mixed,
    ]


@pytest.mark.parametrize("bits", range(0, 65))
def test_bitpack_round_trips_every_width(bits: int) -> None:
    for symbols in _edge_streams(bits):
        packed = bitpack.pack(symbols, bits)
        assert (
            len(packed) == bitpack.packed_size(symbols.size, bits) == -(-symbols.size * bits // 8)
        )
        assert np.array_equal(bitpack.unpack(packed, symbols.size, bits).astype(np.uint64), symbols)


def test_bitpack_crosses_chunks_and_is_lsb_first() -> None:
    symbols = np.arange(200_003, dtype=np.uint64) % 31
    assert np.array_equal(bitpack.unpack(bitpack.pack(symbols, 5), symbols.size, 5), symbols)
    assert bitpack.pack(np.array([1, 0, 0, 0, 0, 0, 0, 1], dtype=np.uint64), 1) == b"\x81"
    assert bitpack.pack(np.array([5, 1], dtype=np.uint64), 3) == bytes([0b001101])
    assert bitpack.bit_width(31) == 5 and bitpack.bit_width(32) == 6 and bitpack.bit_width(0) == 0


@pytest.mark.parametrize("bits", range(huffman.MIN_BITS, huffman.MAX_BITS + 1))
def test_huffman_round_trips_every_width(bits: int) -> None:
    rng = np.random.default_rng(bits)
    skewed = np.minimum(rng.geometric(0.3, 5000) - 1, (1 << bits) - 1).astype(np.uint64)
    for symbols in [*_edge_streams(bits)[1:], skewed]:
        payload = huffman.encode(symbols, bits)
        assert payload is not None
        decoded = huffman.decode(payload, symbols.size, bits)
        assert np.array_equal(decoded.astype(np.uint64), symbols)


def test_huffman_blocks_decode_in_parallel_and_use_entropy() -> None:
    rng = np.random.default_rng(0)
    symbols = rng.choice(16, size=3_000_001, p=[0.5] + [0.5 / 15] * 15).astype(np.uint64)
    payload = huffman.encode(symbols, 4)
    assert huffman.block_size(symbols.size) * 4096 >= symbols.size  # at most 4096 blocks
    entropy = -(0.5 * np.log2(0.5) + 15 * (0.5 / 15) * np.log2(0.5 / 15))
    assert len(payload) * 8 / symbols.size < entropy + 0.1
    assert np.array_equal(huffman.decode(payload, symbols.size, 4), symbols)


def test_huffman_lengths_are_canonical_prefix_codes_of_at_most_15_bits() -> None:
    fibonacci = [1, 1]
    while len(fibonacci) < 30:
        fibonacci.append(fibonacci[-1] + fibonacci[-2])
    lengths = huffman.code_lengths(np.array(fibonacci, dtype=np.int64))
    assert lengths.max() == huffman.MAX_CODE_BITS  # the optimal tree is 29 deep: limited
    _, lens, codes, _ = huffman.canonical(lengths)
    assert sum(2.0**-lens) == 1.0
    words = [format(int(c), f"0{int(n)}b") for c, n in zip(codes, lens, strict=True)]
    assert not any(a != b and b.startswith(a) for a in words for b in words)
    assert huffman.code_lengths(np.array([0, 0, 7]))[2] == 1  # a lone symbol: one bit


@pytest.mark.parametrize(
    "lengths",
    [[1, 1, 1], [2, 2, 2], [0, 0, 0, 0], [1, 2, 0, 0], [2, 0, 0, 0]],
    ids=["over-subscribed", "incomplete", "empty", "incomplete-2", "lone-but-2-bits"],
)
def test_invalid_huffman_code_lengths_are_rejected(lengths: list[int]) -> None:
    with pytest.raises(PrunekitError, match="Huffman"):
        huffman.canonical(np.array(lengths, dtype=np.uint8))


def test_zstd_is_bounded_by_the_declared_size() -> None:
    frame = zstd.compress(bytes(10_000))
    assert zstd.decompress(frame, 10_000) == bytes(10_000)
    for size in (9_999, 10_001, 0):
        with pytest.raises(PrunekitError, match="zstd"):
            zstd.decompress(frame, size)
    with pytest.raises(PrunekitError, match="zstd"):
        zstd.decompress(b"\x00garbage", 10)


def _every_codec(symbols: np.ndarray, bits: int) -> dict[str, bytes]:
    packed = bitpack.pack(symbols, bits)
    out = {"pack": packed, "pack+zstd": zstd.compress(packed)}
    if huffman.MIN_BITS <= bits <= huffman.MAX_BITS and symbols.size:
        out["huffman"] = huffman.encode(symbols, bits)
    if 1 <= bits < 8 and packed:
        out["pack+huffman"] = huffman.encode(np.frombuffer(packed, dtype=np.uint8), 8)
    return out


@pytest.mark.parametrize("bits", range(1, 17))
def test_every_codec_round_trips_and_the_smallest_is_kept(bits: int) -> None:
    for symbols in _edge_streams(bits):
        forced = _every_codec(symbols, bits)
        for codec, payload in forced.items():
            decoded = streams.decode(codec, payload, symbols.size, bits)
            assert np.array_equal(decoded.astype(np.uint64), symbols), codec
        codec, payload = streams.encode(symbols, bits)
        assert np.array_equal(streams.decode(codec, payload, symbols.size, bits), symbols)
        assert len(payload) <= min(len(p) for p in forced.values())


def test_entropy_coding_only_where_it_pays() -> None:
    rng = np.random.default_rng(0)
    uniform = rng.integers(0, 256, 10_000, dtype=np.uint64)
    assert streams.encode(uniform, 8)[0] == "pack"  # random bytes: neither helps
    skewed = rng.choice(32, 10_000, p=[0.9] + [0.1 / 31] * 31).astype(np.uint64)
    codec, payload = streams.encode(skewed, 5)
    assert codec != "pack" and len(payload) < bitpack.packed_size(10_000, 5) / 2
    assert streams.encode(np.zeros(10, dtype=np.uint64), 3)[0] == "pack"  # too small to pay


def test_stream_sizes_must_match_exactly() -> None:
    symbols = np.arange(100, dtype=np.uint64) % 7
    packed = bitpack.pack(symbols, 3)
    with pytest.raises(PrunekitError, match="cannot hold"):
        streams.decode("pack", packed[:-1], 100, 3)
    with pytest.raises(PrunekitError, match="unknown codec"):
        streams.decode("lzma", packed, 100, 3)
    with pytest.raises(PrunekitError, match="width"):
        streams.decode("pack", packed, 100, 65)
