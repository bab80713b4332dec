"""Tensor layouts and value streams: bit-exact round trips for every dtype, the cheapest kept."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from prunekit.artifact import tensors
from prunekit.errors import PrunekitError

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.complex64,
          torch.float8_e4m3fn, torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8,
          torch.uint16, torch.uint32, torch.uint64, torch.bool]  # fmt: skip


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    # Bytes, not values: -0.0 and NaN payloads must come back exactly.
    def raw(t: torch.Tensor) -> bytes:
        return t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""

    return a.dtype == b.dtype and a.shape == b.shape and raw(a) == raw(b)


def _round_trip(t: torch.Tensor, layouts: tuple[str, ...] = tensors.LAYOUTS) -> tensors.Encoded:
    encoded = tensors.encode(t, layouts)
    decoded = tensors.decode(encoded.entry, encoded.payload, t.dtype, list(t.shape))
    assert _same_bits(decoded, t), (t.dtype, encoded.entry)
    assert encoded.entry["bytes"] == len(encoded.payload)
    return encoded


def _edge_tensors(dtype: torch.dtype) -> list[torch.Tensor]:
    """Empty, one element, all zeros, no zeros, extreme values, 90% zeros; built in a wide
    type and converted, since narrow dtypes lack most ops."""
    gen = torch.Generator().manual_seed(0)
    keep = torch.rand(30, 10, generator=gen) >= 0.9
    if dtype.is_floating_point or dtype.is_complex:
        full = torch.randn(30, 10, generator=gen)
        info = torch.finfo(dtype if dtype.is_floating_point else torch.float32)
        extremes = [info.max, info.min, info.tiny, -0.0, float("nan"), float("inf")]
        wide, convert = torch.tensor(extremes, dtype=torch.float64), lambda t: t.to(dtype)
    elif dtype.itemsize == 8:  # the full 64-bit range, through int64's bits
        full = torch.randint(-(2**63), 2**63 - 1, (30, 10), generator=gen)
        wide = torch.tensor([-1, 2**63 - 1, -(2**63), 0, 1])
        convert = (lambda t: t.view(dtype)) if dtype != torch.int64 else (lambda t: t)
    else:
        info = torch.iinfo(dtype) if dtype != torch.bool else torch.iinfo(torch.uint8)
        high = 1 if dtype == torch.bool else info.max
        full = torch.randint(info.min, high + 1, (30, 10), generator=gen)
        wide, convert = torch.tensor([high, info.min, 0, 1]), lambda t: t.to(dtype)
    return [
        convert(torch.zeros(0, 3, dtype=full.dtype)),  # empty
        convert(full[0, 0].clone()),  # one element, zero dimensions
        convert(torch.zeros(17, 5, dtype=full.dtype)),  # all zeros
        convert(torch.where(full == 0, 1, full) if not full.is_floating_point() else full),
        convert(wide),
        convert(full * keep),
    ]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", ["dense", "bitmask", "relative", "auto"])
def test_every_layout_round_trips_every_dtype(dtype: torch.dtype, layout: str) -> None:
    layouts = tensors.LAYOUTS if layout == "auto" else (layout,)
    for t in _edge_tensors(dtype):
        encoded = _round_trip(t, layouts)
        if layout != "auto":
            assert encoded.entry["encoding"] == layout


def test_integers_pack_at_the_width_their_range_needs() -> None:
    indices = torch.randint(0, 32, (64, 64), generator=torch.Generator().manual_seed(0))
    entry = _round_trip(indices).entry
    assert entry["values"] == "int" and entry["offset"] == 0
    assert entry["streams"][0]["bits"] == 5 and entry["bytes"] <= 64 * 64 * 5 // 8
    int8 = torch.randint(-3, 5, (100,), dtype=torch.int8, generator=torch.Generator())
    entry = _round_trip(int8).entry
    assert entry["offset"] == int(int8.min()) and entry["streams"][-1]["bits"] <= 3
    constant = _round_trip(torch.full((1000,), 7, dtype=torch.int64)).entry
    assert constant["streams"][0]["bits"] == 0 and constant["bytes"] == 0  # held by the offset
    for bits in range(1, 17):
        t = torch.arange(1 << bits, dtype=torch.int32).flip(0)
        assert _round_trip(t).entry["streams"][-1]["bits"] == bits


def test_relative_gaps_bridge_long_runs_with_fillers() -> None:
    kept = np.array([0, 3, 40, 41, 1000])
    gaps, at = tensors._gaps(kept, 4)
    # 36 zeros before 40 = two fillers of 16 and a gap of 4; 958 zeros = 59 fillers and 14.
    assert gaps[at].tolist() == [0, 2, 4, 0, 14]
    assert gaps.size == 5 + 2 + 59
    for bits in tensors.GAP_BITS:
        gaps, at = tensors._gaps(kept, bits)
        assert gaps.max() < 1 << bits
        assert (np.cumsum(gaps.astype(np.int64) + 1) - 1)[at].tolist() == kept.tolist()
    t = torch.zeros(5000)
    t[[0, 3, 40, 41, 1000, 4999]] = torch.tensor([1.0, -2.0, 3.0, 4.0, 5.0, 6.0])
    assert _round_trip(t, ("relative",)).entry["streams"][0]["bits"] in tensors.GAP_BITS


def test_the_cheapest_layout_is_kept() -> None:
    gen = torch.Generator().manual_seed(0)
    dense = torch.randn(200, 100, generator=gen)
    assert _round_trip(dense).entry["encoding"] == "dense"
    sparse = dense * (torch.rand(dense.shape, generator=gen) < 0.1)
    best = _round_trip(sparse)
    assert best.entry["encoding"] in ("bitmask", "relative")
    forced = [tensors.encode(sparse, (layout,)) for layout in tensors.LAYOUTS]
    assert best.cost <= min(f.cost for f in forced) * 1.01  # chosen on fast-zstd estimates
    assert best.entry["bytes"] < 0.2 * dense.numel() * 4


def test_float_planes_separate_the_compressible_exponent_byte() -> None:
    weights = torch.randn(256, 256, generator=torch.Generator().manual_seed(0)) * 0.02
    entry = _round_trip(weights).entry
    assert entry["values"] == "planes"
    high = entry["streams"][3]  # little-endian: byte 3 holds the sign and 7 exponent bits
    assert high["codec"] != "pack" and high["bytes"] < 0.6 * high["count"]
    assert entry["bytes"] < 0.9 * weights.numel() * 4


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda e: e.update(encoding="sparse"), "unknown encoding"),
        (lambda e: e.update(values="int"), "do not fit dtype"),
        (lambda e: e["streams"].pop(), "declare"),
        (lambda e: e["streams"][0].update(bits=7), "bits"),
        (lambda e: e["streams"][0].update(count=-1), "non-negative"),
        (lambda e: e["streams"][0].update(bytes=10**9), "declare"),
        (lambda e: e["streams"][0].update(codec="zip"), "unknown codec"),
    ],
)
def test_entries_that_do_not_fit_the_payload_are_rejected(edit, message: str) -> None:
    t = torch.randn(64, 64) * (torch.rand(64, 64) < 0.1)
    encoded = tensors.encode(t, ("bitmask",))
    edit(encoded.entry)
    with pytest.raises(PrunekitError, match=message):
        tensors.decode(encoded.entry, encoded.payload, t.dtype, list(t.shape))


def test_integer_offsets_and_bools_are_range_checked() -> None:
    encoded = tensors.encode(torch.tensor([1, 2, 3], dtype=torch.int8))
    encoded.entry["offset"] = 200
    with pytest.raises(PrunekitError, match="outside"):
        tensors.decode(encoded.entry, encoded.payload, torch.int8, [3])
    encoded = tensors.encode(torch.tensor([0, 2, 1], dtype=torch.uint8))
    with pytest.raises(PrunekitError, match="bool"):
        tensors.decode(encoded.entry, encoded.payload, torch.bool, [3])


def test_gaps_past_the_end_are_rejected() -> None:
    t = torch.zeros(100)
    t[99] = 1.0
    encoded = tensors.encode(t, ("relative",))
    with pytest.raises(PrunekitError, match=r"gaps reach|needs|symbols"):
        tensors.decode(encoded.entry, encoded.payload, t.dtype, [50])
