"""Truncated SVD of one weight matrix (pure: a matrix in, a rank and two factors out).

``W ≈ U_r S_r V_rᵀ`` is split evenly, ``second = U_r √S_r`` and ``first = √S_r V_rᵀ``, so
``second @ first`` is the best rank-``r`` approximation of ``W`` in the Frobenius norm
(Eckart-Young) and both factors are of one scale, which fine-tuning prefers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

# A rank_ratio such as 0.3 of 10 is 3.0000000000000004 in floating point: not a reason for 4.
_EPS = 1e-9


@dataclass(frozen=True)
class Spectrum:
    """The SVD of a weight matrix ``w: [out, in]``, in float64: ``u: [out, k]``, ``s: [k]``
    (descending), ``vh: [k, in]`` with ``k = min(out, in)``, the full rank."""

    u: torch.Tensor
    s: torch.Tensor
    vh: torch.Tensor

    @property
    def full_rank(self) -> int:
        return self.s.numel()

    def energy(self, rank: int) -> float:
        """Fraction of the squared spectrum the first ``rank`` singular values hold."""
        sq = self.s.square()
        total = float(sq.sum())
        return float(sq[:rank].sum()) / total if total else 1.0

    def error(self, rank: int) -> float:
        """Relative error ``‖W − W_r‖ / ‖W‖`` (Frobenius) of the rank-``rank`` approximation."""
        sq = self.s.square()
        total = float(sq.sum())
        return math.sqrt(float(sq[rank:].sum()) / total) if total else 0.0

    def factors(self, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(first: [rank, in], second: [out, rank])``, float64, ``second @ first ≈ W``."""
        root = self.s[:rank].sqrt()
        return root[:, None] * self.vh[:rank], self.u[:, :rank] * root[None, :]


def spectrum(w: torch.Tensor) -> Spectrum:
    """The SVD of ``w: [out, in]`` (computed in float64 on ``w``'s device)."""
    u, s, vh = torch.linalg.svd(w.detach().to(torch.float64), full_matrices=False)
    return Spectrum(u, s, vh)


def choose_rank(
    spec: Spectrum,
    *,
    rank_ratio: float | None = None,
    energy: float | None = None,
    min_rank: int = 1,
    round_to: int = 1,
) -> int:
    """The rank kept: ``ceil(rank_ratio · full)``, or the smallest rank holding ``energy`` of
    the squared spectrum; then at least ``min_rank``, rounded up to a multiple of ``round_to``,
    and never more than the full rank."""
    full = spec.full_rank
    if rank_ratio is not None:
        rank = math.ceil(rank_ratio * full - _EPS)
    else:
        assert energy is not None
        sq = spec.s.square()
        total = float(sq.sum())
        if total == 0:
            rank = 1
        else:
            kept = torch.cumsum(sq, 0) / total
            rank = int((kept < energy - _EPS).sum()) + 1
    rank = max(rank, min_rank)
    rank = math.ceil(rank / round_to) * round_to
    return max(1, min(rank, full))
