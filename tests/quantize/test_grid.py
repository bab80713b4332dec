"""The quantization math: grids, packing, and GPTQ against round-to-nearest."""

import warnings

import pytest
import torch

from prunekit.quantize.gptq import gptq_quantize
from prunekit.quantize.grid import (
    dequantize_groups,
    fake_quant_per_channel,
    group_grid,
    int8_per_channel,
    pack_codes,
    rtn_quantize,
    sqnr_db,
    unpack_codes,
)


def _layer_problem(seed=0, out=32, k=128, n=1024):
    """A layer and strongly correlated inputs with a few outlier features."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(out, k, generator=g)
    mix = torch.randn(k, k, generator=g) / k**0.5
    x = torch.randn(n, k, generator=g) @ (torch.eye(k) + 2 * mix)
    x[:, [3, 40, 77]] *= 10.0
    return w, x


def _error(w, w_hat, x):
    return float(((x @ w.t()) - (x @ w_hat.t())).norm())


def _dequant(codes, grid):
    return dequantize_groups(codes, grid.scales, grid.zeros, grid.group_size)


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 8])
def test_pack_unpack_round_trip(bits):
    g = torch.Generator().manual_seed(bits)
    codes = torch.randint(0, 2**bits, (5, 37), generator=g).to(torch.uint8)
    packed = pack_codes(codes, bits)
    assert packed.dtype == torch.uint8
    assert packed.shape == (5, -(-37 * bits // 8))
    assert torch.equal(unpack_codes(packed, bits, 37), codes)


@pytest.mark.parametrize("bits", [3, 4])
def test_pack_a_block_of_rows_at_a_time_equals_packing_at_once(bits, monkeypatch):
    """Rows are packed a block at a time (a layer's bit streams at once took several times the
    weight's memory); the bytes are those of one pass over every row."""
    from prunekit.quantize import grid

    g = torch.Generator().manual_seed(bits)
    codes = torch.randint(0, 2**bits, (23, 37), generator=g).to(torch.uint8)
    whole = grid._pack(codes, bits)
    monkeypatch.setattr(grid, "_STREAM_BITS", 3 * 37 * bits)  # 3 rows a block, 8 blocks
    assert torch.equal(pack_codes(codes, bits), whole)
    assert torch.equal(unpack_codes(whole, bits, 37), codes)


def test_int8_per_channel_matches_torch_observer():
    from torch.ao.quantization.observer import PerChannelMinMaxObserver

    w = torch.randn(16, 40, generator=torch.Generator().manual_seed(0))
    q, scale = int8_per_channel(w)
    observer = PerChannelMinMaxObserver(dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
    observer(w)
    ref_scale, _ = observer.calculate_qparams()
    torch.testing.assert_close(scale, ref_scale.float())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = torch.quantize_per_channel(
            w, ref_scale, torch.zeros(16, dtype=torch.long), 0, torch.qint8
        ).int_repr()
    assert torch.equal(q, ref)
    assert sqnr_db(w, q.float() * scale[:, None]) > 38


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("bits,group_size", [(8, -1), (4, 16), (3, 32), (2, 8)])
def test_rtn_codes_in_range_and_zeros_exact(bits, group_size, symmetric):
    w = torch.randn(8, 64, generator=torch.Generator().manual_seed(1))
    w[w.abs() < 0.5] = 0.0
    codes, grid = rtn_quantize(w, bits, group_size, symmetric)
    assert int(codes.max()) < 2**bits
    assert grid.scales.shape == (8, 64 // (64 if group_size == -1 else group_size))
    w_hat = _dequant(codes, grid)
    assert torch.all(w_hat[w == 0] == 0)
    assert torch.equal(grid.scales, grid.scales.half().float())  # stored as float16, exactly
    if bits == 8:
        assert sqnr_db(w, w_hat) > 35


def test_fake_quant_lands_on_the_stored_grid():
    w = torch.randn(8, 64, generator=torch.Generator().manual_seed(2))
    q8, s8 = int8_per_channel(w)
    assert torch.equal(fake_quant_per_channel(w, 8), q8.float() * s8[:, None])
    codes, grid = rtn_quantize(w, 4, -1, True)
    torch.testing.assert_close(fake_quant_per_channel(w, 4), _dequant(codes, grid))


@pytest.mark.parametrize("bits", [4, 3])
@pytest.mark.parametrize("act_order", [False, True])
def test_gptq_reconstructs_better_than_rtn(bits, act_order):
    w, x = _layer_problem()
    h = 2 * x.t() @ x / x.shape[0]
    codes, grid = rtn_quantize(w, bits, 32, True)
    e_rtn = _error(w, _dequant(codes, grid), x)
    codes, grid = gptq_quantize(w, h, bits, 32, True, act_order, block_size=32)
    e_gptq = _error(w, _dequant(codes, grid), x)
    assert int(codes.max()) < 2**bits
    assert e_gptq < 0.8 * e_rtn


def test_gptq_per_channel_asymmetric_and_sparsity_preserved():
    w, x = _layer_problem(seed=3)
    w[torch.rand(w.shape, generator=torch.Generator().manual_seed(4)) < 0.5] = 0.0
    h = 2 * x.t() @ x / x.shape[0]
    codes, grid = gptq_quantize(w, h, 4, -1, False, True)
    w_hat = _dequant(codes, grid)
    assert torch.all(w_hat[w == 0] == 0)
    assert grid.scales.shape == (32, 1)
    r_codes, r_grid = rtn_quantize(w, 4, -1, False)
    assert _error(w, w_hat, x) < _error(w, _dequant(r_codes, r_grid), x)


def test_group_grid_handles_a_partial_last_group():
    w = torch.randn(4, 40)
    grid = group_grid(w, 4, 16, False)
    assert grid.scales.shape == (4, 3)
    codes, grid = rtn_quantize(w, 4, 16, False)
    assert _dequant(codes, grid).shape == (4, 40)
