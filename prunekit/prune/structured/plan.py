"""Which units go: pure functions from scores and a config to a removal mask per group."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from prunekit.prune.structured.graph import DependencyGraph, Group


@dataclass(frozen=True)
class Limits:
    """Per-group constraints. min_channels: channels (not units) a group keeps at least.
    round_to: kept channel counts are multiples of this (hardware-friendly widths).
    nearest: round a kept count to the nearest allowed one, not up: for a MACs target, whose
    total :func:`give_back` then settles; rounding up never removes more than a ratio asks."""

    min_channels: int = 1
    round_to: int = 1
    nearest: bool = False


def per_unit(group: Group) -> int:
    """Channels one unit removes from its main member (1 for a neuron, head_dim for a head)."""
    return int(group.members[0].index.shape[1])


def unit_step(group: Group, limits: Limits) -> int:
    """The fewest units whose channels are a multiple of ``round_to``: kept counts move by this."""
    return limits.round_to // math.gcd(limits.round_to, per_unit(group))


def keep_count(group: Group, ratio: float, limits: Limits) -> int:
    """Units kept when removing ``ratio`` of them, honouring the limits: a multiple of
    :func:`unit_step`, or the whole group."""
    size, step = group.size, unit_step(group, limits)
    keep = size - math.floor(ratio * size + 1e-9)
    least = max(math.ceil(limits.min_channels / per_unit(group)), 1)
    keep = min(max(keep, least), size)
    if step == 1 or keep == size:
        return keep
    lower, upper = keep // step * step, min(math.ceil(keep / step) * step, size)
    # Ties go up: keeping a unit more is the safer error.
    if limits.nearest and keep - lower < upper - keep and lower >= least:
        return lower
    return upper


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


def give_back(
    groups: list[Group],
    scores: dict[int, np.ndarray],
    removed: dict[int, np.ndarray],
    limits: Limits,
    fits: Callable[[dict[int, np.ndarray]], bool],
) -> dict[int, np.ndarray]:
    """``removed`` with whole steps of units (:func:`unit_step`) put back into ``groups`` while
    ``fits`` holds for the plan, the step whose units score highest (normalised per group, as
    :func:`plan_global` ranks them) first, until no group's next step fits.

    A group's step adds at least as many MACs once others have grown, so a step that does not
    fit never will: each group is dropped at its first miss (at most one ``fits`` call per step
    put back, plus one per group)."""
    out = dict(removed)
    norm = {g.id: scores[g.id] / max(scores[g.id].mean(), 1e-12) for g in groups}

    def gain(g: Group) -> float:
        back = min(unit_step(g, limits), int(out[g.id].sum()))
        return float(np.sort(norm[g.id][out[g.id]])[-back:].mean())

    open_groups = [g for g in groups if out[g.id].any()]
    while open_groups:
        best = max(open_groups, key=gain)  # ties: the first group
        kept = int((~out[best.id]).sum())
        grown = lowest(scores[best.id], min(kept + unit_step(best, limits), best.size))
        candidate = {**out, best.id: grown}
        if fits(candidate):
            out = candidate
            if grown.any():
                continue
        open_groups.remove(best)
    return out
