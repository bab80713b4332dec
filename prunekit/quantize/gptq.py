"""GPTQ (Frantar et al. 2022) as plain tensor math: a weight matrix and its inputs' Hessian in,
codes and their grid out.

Columns are quantized left to right in blocks of ``block_size``; each column's rounding error,
scaled by the upper Cholesky factor of H⁻¹ (H = 2XXᵀ/N, dampened), is pushed onto the columns
not yet quantized, so ‖WX − ŴX‖ stays small. Weights that are exactly zero (pruned) are
"quantized" to zero and their error fed forward the same way (as SparseGPT does for the
weights it removes), so a pruned model stays exactly as sparse.
"""

from __future__ import annotations

import math

import torch

from prunekit.calibrate import hessian_inverse_factor
from prunekit.quantize.grid import GroupGrid, group_params, quantize_column, resolve_group_size


def gptq_quantize(
    w: torch.Tensor,
    h: torch.Tensor,
    bits: int,
    group_size: int = 128,
    symmetric: bool = True,
    act_order: bool = False,
    block_size: int = 128,
    dampening: float = 0.01,
) -> tuple[torch.Tensor, GroupGrid]:
    """Quantize ``w [out, K]`` given ``h = 2XXᵀ/N [K, K]``.

    Returns ``(codes uint8 [out, K], grid)`` in the original column order; group g covers
    columns ``g·group_size …``. Without ``act_order`` a group's grid is taken from its columns
    as updated when the pass reaches them; with it, from the unquantized weights.
    """
    # One float32 copy each (.float().clone() would make two of a bf16 weight).
    w = w.detach().to(torch.float32, copy=True)
    h = h.detach().to(torch.float32, copy=True)
    out, k = w.shape
    gs = resolve_group_size(group_size, k)
    groups = math.ceil(k / gs)
    pruned = w == 0
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0  # inputs never seen: unit curvature keeps them out of the others' way

    scales = torch.empty(out, groups, device=w.device)
    zeros = torch.empty(out, groups, device=w.device)
    static = act_order or gs == k
    if static:
        for g in range(groups):
            scales[:, g], zeros[:, g] = group_params(w[:, g * gs : (g + 1) * gs], bits, symmetric)

    perm = torch.arange(k, device=w.device)
    if act_order:
        perm = torch.argsort(torch.diag(h), descending=True, stable=True)
        w, h, pruned = w[:, perm], h[perm][:, perm], pruned[:, perm]
    order = perm.tolist()
    hinv = hessian_inverse_factor(h, dampening, "gptq")
    del h  # the factor is all the pass reads: one [K, K] fewer while it runs
    maxq = 2**bits - 1
    # Codes are whole numbers in [0, maxq]: uint8 holds them exactly, at a quarter of float32.
    codes = torch.empty(out, k, dtype=torch.uint8, device=w.device)

    for i1 in range(0, k, block_size):
        i2 = min(i1 + block_size, k)
        w1 = w[:, i1:i2].clone()
        err1 = torch.zeros_like(w1)
        hinv1 = hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            column = order[i1 + i]
            g = column // gs
            if not static and column % gs == 0:
                ahead = torch.cat([w1[:, i:], w[:, i2:]], dim=1)[:, :gs]
                scales[:, g], zeros[:, g] = group_params(ahead, bits, symmetric)
            c, q = quantize_column(w1[:, i], scales[:, g], zeros[:, g], maxq)
            keep_zero = pruned[:, i1 + i]
            c = torch.where(keep_zero, zeros[:, g], c)
            q = q.masked_fill(keep_zero, 0.0)
            codes[:, i1 + i] = c
            e = (w1[:, i] - q) / hinv1[i, i]
            w1[:, i:] -= e.unsqueeze(1) * hinv1[i, i:].unsqueeze(0)
            err1[:, i] = e
        w[:, i2:] -= err1 @ hinv[i1:i2, i2:]

    codes = codes[:, torch.argsort(perm)] if act_order else codes
    return codes, GroupGrid(bits, gs, scales, zeros)
