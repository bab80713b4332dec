"""The IDX reader: round-trips files we write, refuses malformed ones."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from prunekit.data import parse_idx, read_idx
from prunekit.errors import PrunekitError

CODES = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D}


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file written independently of the reader: header, then big-endian values."""
    header = struct.pack(">HBB", 0, CODES[array.dtype.type], array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, array: np.ndarray, compress: bool) -> Path:
    raw = idx_bytes(array)
    path.write_bytes(gzip.compress(raw) if compress else raw)
    return path


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32])
def test_round_trip(tmp_path: Path, compress: bool, dtype: type) -> None:
    rng = np.random.default_rng(0)
    array = (rng.standard_normal((7, 5, 3)) * 100).astype(dtype)
    suffix = ".gz" if compress else ""
    got = read_idx(write_idx(tmp_path / f"a-idx3-ubyte{suffix}", array, compress))
    assert got.dtype == np.dtype(dtype)
    assert got.shape == (7, 5, 3)
    np.testing.assert_array_equal(got, array)


def test_labels_file_is_one_dimensional(tmp_path: Path) -> None:
    labels = np.arange(10, dtype=np.uint8)
    got = read_idx(write_idx(tmp_path / "labels-idx1-ubyte", labels, compress=False))
    np.testing.assert_array_equal(got, labels)


def test_gzip_is_detected_by_content_not_name(tmp_path: Path) -> None:
    array = np.ones((2, 3), dtype=np.uint8)
    got = read_idx(write_idx(tmp_path / "no-suffix", array, compress=True))
    np.testing.assert_array_equal(got, array)


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (b"", "not an IDX file"),
        (b"\x08\x03\x00\x00" + b"\x00" * 12, "magic"),  # bytes in the wrong order
        (b"\x00\x00\x07\x01\x00\x00\x00\x01\x00", "magic"),  # unknown dtype code 0x07
        (b"\x00\x00\x08\x03\x00\x00\x00\x02", "header truncated"),
        (idx_bytes(np.zeros((4, 4), dtype=np.uint8))[:-1], "truncated or corrupt"),
        (idx_bytes(np.zeros((4, 4), dtype=np.uint8)) + b"\x00", "truncated or corrupt"),
    ],
    ids=["empty", "bad-magic", "bad-dtype", "short-header", "short-payload", "long-payload"],
)
def test_rejects_malformed(raw: bytes, match: str) -> None:
    with pytest.raises(PrunekitError, match=match):
        parse_idx(raw, source="x")


def test_corrupt_file_names_its_path(tmp_path: Path) -> None:
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(b"\x01\x02\x03\x04\x05")
    with pytest.raises(PrunekitError, match=str(path)):
        read_idx(path)


def test_corrupt_gzip_raises_prunekit_error(tmp_path: Path) -> None:
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros((3,), dtype=np.uint8)))[:-6])
    with pytest.raises(PrunekitError, match="cannot read"):
        read_idx(path)
