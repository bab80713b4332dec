"""How much each block (or layer) is pruned: uniform, or by outlier statistics (OWL). Pure.

OWL (Yin et al. 2023): layers whose activation-weighted scores |W|·‖X‖ have more outliers
(entries above ``threshold`` × the layer mean) matter more; their density is raised, others'
lowered, within ±``lam`` of the target, and the overall count of removed weights stays exact.
"""

from __future__ import annotations

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
