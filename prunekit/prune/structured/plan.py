"""Which units go: pure functions from scores and a config to a removal mask per group."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from prunekit.prune.structured.graph import DependencyGraph, Group


@dataclass(frozen=True)
class Limits:
    """Per-group constraints. min_channels: channels (not units) a group keeps at least.
    round_to: kept channel counts are multiples of this (hardware-friendly widths)."""

    min_channels: int = 1
    round_to: int = 1


def per_unit(group: Group) -> int:
    """Channels one unit removes from its main member (1 for a neuron, head_dim for a head)."""
    return int(group.members[0].index.shape[1])


def keep_count(group: Group, ratio: float, limits: Limits) -> int:
    """Units kept when removing ``ratio`` of them, honouring the limits."""
    size, width = group.size, per_unit(group)
    keep = size - math.floor(ratio * size + 1e-9)
    keep = max(keep, math.ceil(limits.min_channels / width), 1)
    step = limits.round_to // math.gcd(limits.round_to, width)
    if step > 1:
        keep = math.ceil(keep / step) * step
    return min(keep, size)


def lowest(scores: np.ndarray, keep: int) -> np.ndarray:
    """Removal mask for the ``len(scores) - keep`` lowest scores (ties: the later unit goes)."""
    order = np.lexsort((-np.arange(len(scores)), scores))
    removed = np.zeros(len(scores), dtype=bool)
    removed[order[: len(scores) - keep]] = True
    return removed


def plan_layer(
    groups: list[Group], scores: dict[int, np.ndarray], ratios: dict[int, float], limits: Limits
) -> dict[int, np.ndarray]:
    """Each group removes its own ratio of units."""
    return {g.id: lowest(scores[g.id], keep_count(g, ratios[g.id], limits)) for g in groups}


def plan_global(
    groups: list[Group], scores: dict[int, np.ndarray], ratio: float, limits: Limits
) -> dict[int, np.ndarray]:
    """One ranking over every group's units (scores are normalised per group), then limits."""
    if not groups:
        return {}
    flat = np.concatenate([scores[g.id] / max(scores[g.id].mean(), 1e-12) for g in groups])
    owner = np.concatenate([np.full(g.size, i) for i, g in enumerate(groups)])
    n_remove = math.floor(ratio * len(flat) + 1e-9)
    order = np.argsort(flat, kind="stable")[:n_remove]
    removed_per = np.bincount(owner[order], minlength=len(groups))
    out = {}
    for i, g in enumerate(groups):
        out[g.id] = lowest(scores[g.id], keep_count(g, removed_per[i] / g.size, limits))
    return out


def search_macs(
    graph: DependencyGraph,
    plan_at: callable,
    target_macs: float,
    steps: int = 30,
) -> tuple[float, dict[int, np.ndarray]]:
    """The smallest ratio whose plan reaches ``target_macs`` (bisection; plans grow with ratio)."""
    lo, hi = 0.0, 0.999
    best = plan_at(hi)
    if graph.count(best)[1] > target_macs:
        return hi, best
    for _ in range(steps):
        mid = (lo + hi) / 2
        candidate = plan_at(mid)
        if graph.count(candidate)[1] <= target_macs:
            hi, best = mid, candidate
        else:
            lo = mid
    return hi, best
