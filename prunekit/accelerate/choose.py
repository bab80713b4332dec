"""Timing candidate kernels on a layer's real inputs, and the choice among them.

:func:`time_kernels` times the candidates of one layer on one input, interleaved, and returns
each one's median seconds per call. :func:`choose` is pure: given every kernel's timings (per
batch size), relative errors and failures, it returns the kernel to use and, for a layer kept
dense, why.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

# timer(kernel, call, number): seconds one call takes, from ``number`` calls of ``call()``.
Timer = Callable[[str, Callable[[], Any], int], float]

SAMPLE_SECONDS = 2e-3  # each timed sample runs a kernel this long, so the clock's grain is small
MAX_NUMBER = 1000


def wall_timer(kernel: str, call: Callable[[], Any], number: int) -> float:
    """The default :data:`Timer`: ``time.perf_counter`` around ``number`` calls."""
    start = time.perf_counter()
    for _ in range(number):
        call()
    return (time.perf_counter() - start) / number


def time_kernels(
    calls: Mapping[str, Callable[[], Any]], repeats: int, timer: Timer = wall_timer
) -> dict[str, float]:
    """Median seconds per call of each kernel in ``calls``.

    Each kernel runs once untimed (it also builds caches: packed int8 weights, the sparse
    tensor); that call's wall time sets how many calls a sample takes. Then ``repeats`` rounds
    each time one sample of every kernel, the order rotating from round to round so that no
    kernel always follows the same one.
    """
    numbers: dict[str, int] = {}
    for kernel, call in calls.items():
        start = time.perf_counter()
        call()
        once = time.perf_counter() - start
        numbers[kernel] = max(1, min(MAX_NUMBER, math.ceil(SAMPLE_SECONDS / max(once, 1e-9))))
    samples: dict[str, list[float]] = {k: [] for k in calls}
    order = list(calls)
    for r in range(repeats):
        for kernel in order[r % len(order) :] + order[: r % len(order)]:
            samples[kernel].append(timer(kernel, calls[kernel], numbers[kernel]))
    return {k: statistics.median(v) for k, v in samples.items()}


def relative_error(y: torch.Tensor, reference: torch.Tensor) -> float:
    """``‖y − reference‖ / ‖reference‖`` (Frobenius; ``‖y − reference‖`` when the reference is
    all zeros), computed in float64."""
    ref = reference.detach().double()
    diff = float(torch.linalg.vector_norm(y.detach().double() - ref))
    norm = float(torch.linalg.vector_norm(ref))
    return diff / norm if norm > 0 else diff


@dataclass
class Measured:
    """One layer's measurements: seconds per call by kernel and batch size, the worst relative
    error of each kernel over the batch sizes, and the kernels that could not run (why)."""

    seconds: dict[str, dict[int, float]] = field(default_factory=dict)
    errors: dict[str, float] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)

    def speedups(self, kernel: str) -> dict[int, float]:
        """Dense time / ``kernel`` time, by batch size."""
        dense, own = self.seconds.get("dense", {}), self.seconds.get(kernel, {})
        return {b: dense[b] / own[b] for b in own if b in dense and own[b] > 0}


def choose(
    measured: Measured, kernels: list[str], rtol: float, min_speedup: float
) -> tuple[str, str | None]:
    """``(kernel, why it stayed dense)``; the reason is None when a kernel was chosen.

    With ``"dense"`` in ``kernels``, a candidate must be within ``rtol`` and at least
    ``min_speedup`` times faster than dense at every batch size timed; of those, the one with
    the best worst-case speed-up wins. Without it, the candidates within ``rtol`` are forced:
    the fastest of them (worst case over batch sizes) wins, however it compares with dense.
    """
    forced = "dense" not in kernels
    reasons: dict[str, list[str]] = {}  # why → kernels, so csr/mkl and csr/bag share a line
    best: tuple[float, str] | None = None
    for kernel in (k for k in kernels if k != "dense"):
        if kernel in measured.failed:
            reasons.setdefault(measured.failed[kernel], []).append(kernel)
            continue
        error = measured.errors.get(kernel, math.inf)
        if not error <= rtol:
            why = f"outputs off by {error:.2e} (relative) > rtol {rtol:g}"
            reasons.setdefault(why, []).append(kernel)
            continue
        speedups = measured.speedups(kernel)
        worst = min(speedups.values(), default=math.inf if forced else 0.0)
        if not forced and worst < min_speedup:
            at = ", ".join(f"{s:.2f}× at batch {b}" for b, s in sorted(speedups.items()))
            why = f"slower than needed ({at}; min_speedup {min_speedup:g})"
            reasons.setdefault(why, []).append(kernel)
            continue
        if best is None or worst > best[0]:
            best = (worst, kernel)
    if best is not None:
        return best[1], None
    text = "; ".join(f"{', '.join(names)}: {why}" for why, names in reasons.items())
    return "dense", text or "no kernel to try"
