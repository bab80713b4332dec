"""``latency_reduction``: how much to remove, found by timing the shrunk model.

Speed is not MACs: narrow layers run slower per MAC than wide ones, and a batch of one is
bound by other costs than arithmetic (bench.deploy, VGG-BN: 3.97× fewer MACs ran 1.2× faster at
batch 1, 2.5× at batch 64). So
the search bisects the fraction of units removed (ranked as the method ranks them; plans grow
with it), builds each candidate on a copy, times it against the unpruned model interleaved
(``prunekit.measure.latency``) and keeps the least removal measured at least the target fast.
Written here because no library does it for PyTorch models; HALP-style per-layer latency tables
would pick *which* layers to narrow by their own cost, this measures the whole model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from prunekit.errors import PrunekitError

STEPS = 6  # bisection steps: the fraction removed to within 1/64 of the range
MAX_RATIO = 0.95
Removed = dict[int, np.ndarray]
# plan -> (unpruned ms, pruned ms), timed side by side
Timer = Callable[[Removed], tuple[float, float]]


@dataclass
class LatencySearch:
    """What the search measured: ``tried`` holds (fraction removed, measured speed-up)."""

    target: float
    batch: int
    tried: list[tuple[float, float]] = field(default_factory=list)


def search_latency(
    plan_at: Callable[[float], Removed], timer: Timer, target: float, batch: int
) -> tuple[Removed, LatencySearch]:
    """The plan with the least removal whose measured speed-up reaches ``target``."""
    search = LatencySearch(target, batch)

    def speedup(ratio: float) -> tuple[float, Removed]:
        removed = plan_at(ratio)
        dense_ms, pruned_ms = timer(removed)
        search.tried.append((ratio, dense_ms / pruned_ms))
        return dense_ms / pruned_ms, removed

    fastest, best = speedup(MAX_RATIO)
    if fastest < target:
        raise PrunekitError(
            f"latency_reduction={target:g}: removing {MAX_RATIO:.0%} of the removable units "
            f"measured only {fastest:.2f}× faster at batch {batch} (the rest of the time is in "
            "layers that cannot shrink, or in overheads); ask for less"
        )
    lo, hi = 0.0, MAX_RATIO
    for _ in range(STEPS):
        mid = (lo + hi) / 2
        fast, removed = speedup(mid)
        if fast >= target:
            hi, best = mid, removed
        else:
            lo = mid
    return best, search
