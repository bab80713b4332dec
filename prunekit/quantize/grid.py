"""Quantization grids as plain tensor math: scales, codes, dequantization, bit packing.

One symmetric grid serves every bit width: ``scale = amax / ((2^bits − 1) / 2)`` and codes
``q ∈ [−2^(bits−1), 2^(bits−1) − 1]``. At 8 bits this is exactly torch's per-channel symmetric
qint8 observer (``amax / 127.5``), so weights quantized here match ``quantize_dynamic``'s.
Low-bit codes are stored unsigned, ``q + 2^(bits−1)`` (or with an asymmetric zero point), and
bit-packed into uint8. Zero always maps to a code that dequantizes to exactly 0.0, so pruned
weights stay pruned.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

FP32_EPS = torch.finfo(torch.float32).eps
# Low-bit scales are stored in float16; below its smallest normal number they lose precision.
FP16_TINY = torch.finfo(torch.float16).tiny


def sqnr_db(reference: torch.Tensor, approx: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio 10·log10(‖ref‖² / ‖ref − approx‖²) in dB (inf if
    exact)."""
    signal = reference.double().pow(2).sum()
    noise = (reference.double() - approx.double()).pow(2).sum()
    if noise == 0:
        return math.inf
    return float(10 * torch.log10(signal / noise))


# --------------------------------------------------------------------------- int8 per channel


def int8_per_channel(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``w [out, in]`` → ``(q int8 [out, in], scale float32 [out])``, symmetric per row."""
    w = w.detach().float()
    scale = (w.abs().amax(dim=1) / 127.5).clamp_min(FP32_EPS)
    # Multiplying by the inverse, as fbgemm does, rounds ties the way quantize_dynamic does.
    q = torch.round(w * (1.0 / scale)[:, None]).clamp_(-128, 127).to(torch.int8)
    return q, scale


def fake_quant_per_channel(w: torch.Tensor, bits: int) -> torch.Tensor:
    """``w [out, ...]`` rounded onto its symmetric per-output-channel ``bits`` grid (float):
    the grid of :func:`int8_per_channel` at 8 bits, of :func:`group_params` (float16 scales)
    below."""
    flat = w.reshape(w.shape[0], -1)
    scale = (flat.abs().amax(dim=1) / ((2**bits - 1) / 2)).clamp_min(FP32_EPS)
    if bits < 8:
        scale = scale.clamp_min(FP16_TINY).half().to(w.dtype)
    scale = scale.reshape(-1, *([1] * (w.dim() - 1)))
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return torch.round(w * (1.0 / scale)).clamp(lo, hi) * scale


def fake_quant_range(
    x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, bits: int
) -> torch.Tensor:
    """``x`` rounded onto the asymmetric ``bits`` grid spanning ``[lo, hi]`` (0 included)."""
    lo, hi = torch.clamp(lo, max=0.0), torch.clamp(hi, min=0.0)
    levels = 2**bits - 1
    scale = ((hi - lo) / levels).clamp_min(FP32_EPS)
    zero = torch.round(-lo / scale)
    return (torch.round(x / scale) + zero).clamp(0, levels).sub(zero).mul(scale)


# --------------------------------------------------------------------------- low-bit groups


@dataclass(frozen=True)
class GroupGrid:
    """Per-group grid of a ``[out, in]`` matrix: ``scales [out, G]`` (float32 values exactly
    representable in float16) and ``zeros [out, G]`` (unsigned codes of 0.0)."""

    bits: int
    group_size: int
    scales: torch.Tensor
    zeros: torch.Tensor

    @property
    def maxq(self) -> int:
        return 2**self.bits - 1

    def columns(self, g: int, k: int) -> slice:
        return slice(g * self.group_size, min((g + 1) * self.group_size, k))


def resolve_group_size(group_size: int, in_features: int) -> int:
    """``-1`` (per output channel) becomes ``in_features``."""
    return in_features if group_size == -1 else group_size


def group_params(w: torch.Tensor, bits: int, symmetric: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero code per row of ``w [out, n]`` (one group): returns ``([out], [out])``.

    Symmetric: ``scale = 2·amax / (2^bits − 1)``, zero ``2^(bits−1)``. Asymmetric: the range
    ``[min(w, 0), max(w, 0)]`` over ``2^bits − 1`` steps, zero ``round(−min / scale)``.
    """
    w = w.float()
    maxq = 2**bits - 1
    if symmetric:
        scale = 2 * w.abs().amax(dim=1) / maxq
        zero = torch.full_like(scale, 2 ** (bits - 1))
    else:
        lo = w.amin(dim=1).clamp(max=0.0)
        hi = w.amax(dim=1).clamp(min=0.0)
        scale = (hi - lo) / maxq
    scale = scale.clamp_min(FP16_TINY).half().float()
    if not symmetric:
        zero = torch.round(-lo / scale).clamp(0, maxq)
    return scale, zero


def group_grid(w: torch.Tensor, bits: int, group_size: int, symmetric: bool) -> GroupGrid:
    """The grid of every group of ``w [out, in]``, each from its own weights."""
    out, k = w.shape
    gs = resolve_group_size(group_size, k)
    groups = math.ceil(k / gs)
    scales = torch.empty(out, groups, device=w.device)
    zeros = torch.empty(out, groups, device=w.device)
    for g in range(groups):
        scales[:, g], zeros[:, g] = group_params(w[:, g * gs : (g + 1) * gs], bits, symmetric)
    return GroupGrid(bits, gs, scales, zeros)


def quantize_column(
    col: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, maxq: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """One column ``[out]`` onto per-row grids: returns ``(codes float [out], values [out])``."""
    codes = torch.round(col / scale + zero).clamp(0, maxq)
    return codes, (codes - zero) * scale


def quantize_groups(w: torch.Tensor, grid: GroupGrid) -> torch.Tensor:
    """Round-to-nearest codes of ``w [out, in]`` on ``grid``: uint8 ``[out, in]``."""
    scale, zero = expand_groups(grid, w.shape[1])
    codes = torch.round(w.float() / scale + zero).clamp(0, grid.maxq)
    return codes.to(torch.uint8)


def expand_groups(grid: GroupGrid, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-weight scale and zero ``[out, k]`` from the per-group ones."""
    # A group wider than the row is one group: repeated k times, not group_size (up to 2**31).
    size = min(grid.group_size, k)
    scale = grid.scales.repeat_interleave(size, dim=1)[:, :k]
    zero = grid.zeros.repeat_interleave(size, dim=1)[:, :k]
    return scale, zero


def dequantize_groups(
    codes: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, group_size: int
) -> torch.Tensor:
    """``codes [out, in]`` (unsigned) with ``scales``/``zeros [out, G]`` → float32 ``[out, in]``."""
    k = codes.shape[1]
    size = min(group_size, k)  # as in expand_groups
    scale = scales.float().repeat_interleave(size, dim=1)[:, :k]
    zero = zeros.float().repeat_interleave(size, dim=1)[:, :k]
    return (codes.float() - zero) * scale


def rtn_quantize(
    w: torch.Tensor, bits: int, group_size: int, symmetric: bool
) -> tuple[torch.Tensor, GroupGrid]:
    """Round-to-nearest: ``w [out, in]`` → ``(codes uint8 [out, in], grid)``."""
    grid = group_grid(w.detach().float(), bits, group_size, symmetric)
    return quantize_groups(w.detach(), grid), grid


# --------------------------------------------------------------------------- bit packing


# Rows are packed and unpacked this many bits at a time: the bit streams take 4 bytes a bit,
# so a whole layer's at once would be 16 bytes per 4-bit weight (several times the weight).
_STREAM_BITS = 1 << 18


def _rows_per_block(row_bits: int) -> int:
    return max(1, _STREAM_BITS // max(1, row_bits))


def pack_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Unsigned ``codes [rows, n]`` (< 2^bits) → uint8 ``[rows, ceil(n·bits/8)]``, each row a
    little-endian bit stream (code j occupies bits j·bits … j·bits+bits−1)."""
    rows, n = codes.shape
    if bits == 8:
        return codes.to(torch.uint8).contiguous()
    packed = torch.empty(rows, packed_width(n, bits), dtype=torch.uint8, device=codes.device)
    step = _rows_per_block(n * bits)
    for start in range(0, rows, step):
        packed[start : start + step] = _pack(codes[start : start + step], bits)
    return packed


def _pack(codes: torch.Tensor, bits: int) -> torch.Tensor:
    rows, n = codes.shape
    shifts = torch.arange(bits, dtype=torch.int32, device=codes.device)
    stream = ((codes.to(torch.int32).unsqueeze(-1) >> shifts) & 1).reshape(rows, n * bits)
    pad = -stream.shape[1] % 8
    stream = torch.nn.functional.pad(stream, (0, pad)).reshape(rows, -1, 8)
    weights = 1 << torch.arange(8, dtype=torch.int32, device=codes.device)
    return (stream * weights).sum(dim=-1).to(torch.uint8)


def unpack_codes(packed: torch.Tensor, bits: int, n: int) -> torch.Tensor:
    """Inverse of :func:`pack_codes`: uint8 ``[rows, n]``."""
    if bits == 8:
        return packed
    rows = packed.shape[0]
    codes = torch.empty(rows, n, dtype=torch.uint8, device=packed.device)
    step = _rows_per_block(packed.shape[1] * 8)
    for start in range(0, rows, step):
        codes[start : start + step] = _unpack(packed[start : start + step], bits, n)
    return codes


def _unpack(packed: torch.Tensor, bits: int, n: int) -> torch.Tensor:
    rows = packed.shape[0]
    shifts = torch.arange(8, dtype=torch.int32, device=packed.device)
    stream = ((packed.to(torch.int32).unsqueeze(-1) >> shifts) & 1).reshape(rows, -1)
    stream = stream[:, : n * bits].reshape(rows, n, bits)
    weights = 1 << torch.arange(bits, dtype=torch.int32, device=packed.device)
    return (stream * weights).sum(dim=-1).to(torch.uint8)


def packed_width(n: int, bits: int) -> int:
    """Bytes per row of :func:`pack_codes` for ``n`` codes."""
    return math.ceil(n * bits / 8)
