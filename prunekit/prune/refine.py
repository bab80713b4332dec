"""Training-free mask refinement after a one-shot step: prune-and-grow swaps per output row. Pure.

DSnoT (Zhang et al. 2023, "Dynamic Sparse No Training"): once a layer is pruned, each output
row swaps one pruned weight back in for one kept weight out, when the swap lowers that row's
reconstruction error, and repeats. DSnoT scores the swaps from the inputs' mean and variance
(features taken as independent); here the row error is the exact quadratic form that
approximates, ``E = rᵀ G r``, with ``r`` the row's difference to the dense weights and
``G = XᵀX/N`` the inputs' second moment [K, K]. SparseGPT collects ``G`` anyway; for Wanda the
independent-feature form was tried and, on gpt-tiny, lowered the modelled error while raising
the perplexity (159.1 → 160.3 at 50 %), so Wanda collects ``G`` too when refining. A swap is
taken only if ``E`` drops, so no row gets worse. Every swap trades one weight for one in the
same row (in the same group of M for N:M): the count of zeros and the N:M pattern stay exactly
what the one-shot step produced.

No library implements this on plain tensors (DSnoT's reference code is a script over LLaMA
checkpoints), hence written here.
"""

from __future__ import annotations

import torch

from prunekit.config import NM


def row_errors(w: torch.Tensor, w_hat: torch.Tensor, gram: torch.Tensor) -> torch.Tensor:
    """Each output row's reconstruction error ``rᵀ G r``, r = w − ŵ [out, K], G [K, K]; [out]."""
    r = w.float() - w_hat.float()
    return (r * (r @ gram.float())).sum(dim=1)


def refine_mask(
    w: torch.Tensor,
    w_hat: torch.Tensor,
    keep: torch.Tensor,
    gram: torch.Tensor,
    nm: NM | None = None,
    iterations: int = 100,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Swap pruned and kept weights row by row while the row's error ``rᵀ G r`` drops.

    w: dense weights [out, K]; gram: the inputs' second moment [K, K]; w_hat: the pruned weights
    (zeros where ``keep`` is False; kept values may differ from ``w``, as after SparseGPT);
    keep: bool [out, K]. A weight grown back takes its dense value. At most ``iterations`` swaps
    per row. Returns the new ``(w_hat, keep, swaps)``; the count of kept weights of every row
    (of every group of M) is unchanged.
    """
    w = w.float()
    w_hat = w_hat.float().clone()
    keep = keep.clone()
    rows, k = w.shape
    if nm is not None and k % nm.m:
        raise ValueError(f"refine: K={k} is not a multiple of M={nm.m}")
    gram = gram.float()
    d = torch.diagonal(gram)
    r = w - w_hat
    g = r @ gram
    err = (r * g).sum(dim=1)
    live = torch.ones(rows, dtype=torch.bool, device=w.device)
    swaps = 0
    inf = torch.tensor(float("inf"), device=w.device)
    for _ in range(iterations):
        # Change of the error when pruned weight j grows back (Δr_j = −w_j) or kept weight k
        # goes (Δr_k = +ŵ_k), each alone: 2·Δr·g + Δr²·G_jj.
        grow = torch.where(keep, inf, -2 * w * g + w**2 * d)
        cut = torch.where(keep, 2 * w_hat * g + w_hat**2 * d, inf)
        j, kk = _pick(grow, cut, nm)
        ar = torch.arange(rows, device=w.device)
        a, b = -w[ar, j], w_hat[ar, kk]
        delta = grow[ar, j] + cut[ar, kk] + 2 * a * b * gram[j, kk]
        # A relative floor keeps float noise from trading weights back and forth.
        take = live & torch.isfinite(delta) & (delta < -1e-7 * err.abs().clamp_min(1e-30))
        live &= take
        if not bool(take.any()):
            break
        idx = ar[take]
        jt, kt, at, bt = j[take], kk[take], a[take], b[take]
        w_hat[idx, jt] = w[idx, jt]
        w_hat[idx, kt] = 0.0
        keep[idx, jt] = True
        keep[idx, kt] = False
        r[idx, jt] = 0.0
        r[idx, kt] = w[idx, kt]
        g[idx] += at.unsqueeze(1) * gram[jt] + bt.unsqueeze(1) * gram[kt]
        err[idx] += delta[take]
        swaps += int(take.sum())
    return w_hat, keep, swaps


def _pick(
    grow: torch.Tensor, cut: torch.Tensor, nm: NM | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, the weight to grow and the one to cut: the cheapest of each in the row, or, for
    N:M, the cheapest of each within the group whose two together change the error most."""
    if nm is None:
        return grow.argmin(dim=1), cut.argmin(dim=1)
    rows, k = grow.shape
    g3, c3 = grow.reshape(rows, k // nm.m, nm.m), cut.reshape(rows, k // nm.m, nm.m)
    gv, gi = g3.min(dim=2)
    cv, ci = c3.min(dim=2)
    group = (gv + cv).argmin(dim=1)
    ar = torch.arange(rows, device=grow.device)
    base = group * nm.m
    return base + gi[ar, group], base + ci[ar, group]
