"""How much each block (or layer) is pruned: uniform, by outlier statistics (OWL), or by a
measured sensitivity. Pure.

OWL (Yin et al. 2023): layers whose activation-weighted scores |W|·‖X‖ have more outliers
(entries above ``threshold`` × the layer mean) matter more; their density is raised, others'
lowered, within ±``lam`` of the target, and the overall count of removed weights stays exact.

Sensitivity: each layer's relative output error as a function of its sparsity is estimated from
the dense calibration statistics (the sum of each output row's smallest per-weight errors
w²·‖X‖², over the row's total, as Wanda compares them), and the sparsities minimise the
size-weighted sum of those errors at the exact overall count — the per-layer error database
and budget solve of Optimal Brain Compression (Frantar et al. 2022), here greedy over the
cheapest error per removed weight, which is optimal for these convex curves.
"""

from __future__ import annotations

import heapq

import torch

from prunekit.prune.plan import num_to_prune, split_count


def outlier_ratio(scores: list[torch.Tensor], threshold: float) -> float:
    """Fraction of entries of the concatenated ``scores`` above ``threshold`` × their mean."""
    flat = torch.cat([s.reshape(-1).float() for s in scores])
    return float((flat > threshold * flat.mean()).float().mean())


def owl_sparsities(ratios: list[float], target: float, lam: float) -> list[float]:
    """Per-group sparsity: more outliers → less pruning, spread over [target − lam, target + lam],
    centred on ``target`` (before the exact rebalancing of :func:`exact_counts`)."""
    d = torch.tensor(ratios, dtype=torch.float64)
    spread = d.max() - d.min()
    if len(ratios) < 2 or spread == 0:
        return [target] * len(ratios)
    scaled = (d - d.min()) / spread * 2 * lam
    density = scaled - scaled.mean() + (1.0 - target)
    return [float(min(max(1.0 - x, 0.0), 0.999)) for x in density]


def exact_counts(sparsities: list[float], sizes: list[int], target: float) -> list[int]:
    """Weights to remove per group: in proportion to ``sparsities`` × size, adding up exactly to
    ``round(target · Σ sizes)``, each capped at its group's size."""
    weights = [s * n for s, n in zip(sparsities, sizes, strict=True)]
    return split_count(num_to_prune(sum(sizes), target), sizes, weights)


def sparsity_grid(target: float, lam: float, step: float = 0.01) -> list[float]:
    """Sparsities from ``target − lam`` to ``target + lam`` every ``step`` (with ``target`` on
    it), clipped to [0, 0.999]."""
    n = round(lam / step)
    points = [target + (i - n) * lam / n for i in range(2 * n + 1)] if n else [target]
    return sorted({min(max(p, 0.0), 0.999) for p in points} | {target})


def error_curve(saliency: torch.Tensor, grid: list[float]) -> list[float]:
    """saliency: [out, K] ≥ 0, each weight's estimated output error when removed alone (e.g.
    w²·‖X‖²). → for each sparsity s of ``grid``, the error of removing each row's s·K smallest
    (linear between whole counts), over the total of ``saliency``: 0 at s = 0, 1 at s = 1."""
    k = saliency.shape[1]
    column = saliency.double().sort(dim=1).values.sum(dim=0)
    prefix = torch.cat([column.new_zeros(1), column.cumsum(0)])
    total = float(prefix[-1])
    if total <= 0:
        return [0.0] * len(grid)
    out = []
    for s in grid:
        at = s * k
        lo = min(int(at), k - 1)
        out.append(float(prefix[lo] + (at - lo) * column[lo]) / total)
    return out


def sensitivity_sparsities(
    curves: list[list[float]], sizes: list[int], grid: list[float], target: float
) -> list[float]:
    """Per-group sparsity on ``grid`` (or between two of its points) minimising Σ size·curve
    with Σ size·sparsity = target·Σ size. curves[g][i]: group g's relative error at grid[i].

    Every group starts at grid[0]; the step of the grid with the least error per removed weight
    is taken next (each group's steps in order) until the target count is met, the last step in
    part. Optimal for convex curves (as sums of sorted errors are)."""
    lo = grid[0]
    if not grid[0] <= target <= grid[-1]:
        raise ValueError(f"target {target} lies outside the grid [{grid[0]}, {grid[-1]}]")
    sparsities = [lo] * len(sizes)
    need = (target - lo) * sum(sizes)
    if len(grid) < 2:
        return sparsities

    def step(g: int, i: int) -> tuple[float, int, int]:
        # cost per removed weight = Δ(size·curve) / (size·Δs) = Δcurve / Δs
        return ((curves[g][i + 1] - curves[g][i]) / (grid[i + 1] - grid[i]), g, i)

    heap = [step(g, 0) for g in range(len(sizes)) if sizes[g] > 0]
    heapq.heapify(heap)
    while heap and need > 0:
        _, g, i = heapq.heappop(heap)
        removed = (grid[i + 1] - grid[i]) * sizes[g]
        if removed >= need:
            sparsities[g] = grid[i] + need / sizes[g]
            break
        need -= removed
        sparsities[g] = grid[i + 1]
        if i + 2 < len(grid):
            heapq.heappush(heap, step(g, i + 1))
    return sparsities
