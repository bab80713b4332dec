"""How much memory there is, how much one-shot pruning needs, and how much a process used.

A language model pruned block by block needs, beyond its own weights, one block's working set:
the calibration activations entering the block, each layer's input statistics (for SparseGPT a
[K, K] float64 Hessian per layer) and the transient copies of solving the largest layer.
:func:`check_fits` compares an estimate of that with what the machine (or the process's
cgroup) has free, before anything is changed.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from prunekit.errors import PrunekitError

GIB = 1 << 30


def available_bytes() -> int | None:
    """Memory this process can still take: ``MemAvailable`` from /proc/meminfo, lowered to the
    cgroup's limit minus its usage when one is set; None where neither can be read."""
    found: list[int] = []
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    v1 = "/sys/fs/cgroup/memory/memory."
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        (f"{v1}limit_in_bytes", f"{v1}usage_in_bytes"),
    ):
        with contextlib.suppress(OSError, ValueError):
            limit = Path(limit_file).read_text().strip()
            if limit != "max" and int(limit) < 1 << 60:  # v1 writes a huge number for "none"
                found.append(int(limit) - int(Path(usage_file).read_text()))
    return min(found) if found else None


@dataclass(frozen=True)
class Need:
    """An estimate of the bytes one-shot pruning takes beyond the loaded weights, by part."""

    activations: int
    statistics: int
    solve: int
    weights: int = 0  # block-wise loading: the weights held at once (a block, embeddings)

    @property
    def total(self) -> int:
        return self.activations + self.statistics + self.solve + self.weights


def check_fits(need: Need, what: str, available: int | None = None) -> None:
    """Raise a PrunekitError naming the need, what there is and what to change when ``need``
    exceeds the memory available (``available``, default :func:`available_bytes`)."""
    free = available_bytes() if available is None else available
    if free is None or need.total <= free:
        return
    raise PrunekitError(
        f"{what} needs about {need.total / GIB:.2f} GiB beyond the loaded weights "
        f"(activations {need.activations / GIB:.2f}, layer statistics "
        f"{need.statistics / GIB:.2f}, solving the largest layer {need.solve / GIB:.2f}, "
        f"weights held {need.weights / GIB:.2f}) and {free / GIB:.2f} GiB is available; use "
        f"fewer calibration samples (num_samples) or shorter ones, or prune a saved model "
        f"folder block by block (prunekit.prune_folder, or prunekit prune --low-memory)"
    )


def _status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1])
    raise OSError(f"{key} not in /proc/self/status")


@dataclass
class PeakRSS:
    """``rise``: bytes the process's peak resident memory rose above its resident memory at the
    start of the ``with`` block (Linux: /proc/self/status; the peak is reset on entry)."""

    start: int = 0
    rise: int = 0


@contextlib.contextmanager
def peak_rss() -> Iterator[PeakRSS]:
    """Measure the resident-memory peak of a block of code (torch allocations included, which
    tracemalloc does not see). Linux only: raises OSError elsewhere."""
    # Writing 5 to clear_refs resets VmHWM (the peak) to the current resident size.
    with open(f"/proc/{os.getpid()}/clear_refs", "w") as f:
        f.write("5")
    result = PeakRSS(start=_status_kib("VmRSS") * 1024)
    yield result
    result.rise = _status_kib("VmHWM") * 1024 - result.start


def block_need(
    shapes: list[tuple[int, int]], hessian: bool, tokens: int, width: int, act_bytes: int
) -> Need:
    """The working set of pruning one block whose layers have weight ``shapes`` ([out, K]
    each): ``tokens`` calibration positions of ``width`` features (``act_bytes`` each) enter
    it; ``hessian``: the method keeps a [K, K] float64 statistic per layer (SparseGPT), else a
    [K] one (Wanda)."""
    # The block's inputs and the outputs it computes for the next block, held together.
    activations = 2 * tokens * width * act_bytes
    statistics = sum((k * k if hessian else k) * 8 for _, k in shapes)
    out, k = max(shapes, key=lambda s: s[0] * s[1])
    # Solving: float32 copies of the weight (the working copy, its result and the mask or
    # scores, 3 x 4 bytes) and, with a Hessian, its float32 form, the dampened copy and the
    # Cholesky factors (4 x [K, K] at most, each freed when the next exists).
    solve = 12 * out * k + (4 * 4 * k * k if hessian else 8 * out * k)
    return Need(activations, statistics, solve)


def calibration_tokens(batches: list[object]) -> int:
    """Token positions in calibration ``batches`` (dicts with ``input_ids``, or integer
    tensors); 0 when the batches are not token ids (images: their activations are small)."""
    import torch

    total = 0
    for batch in batches:
        inputs = batch[0] if isinstance(batch, tuple | list) else batch
        ids = inputs.get("input_ids") if isinstance(inputs, dict) else inputs
        if isinstance(ids, torch.Tensor) and not ids.is_floating_point():
            total += ids.numel()
    return total


def release_freed() -> None:
    """Hand memory freed by torch back to the system (glibc's ``malloc_trim``; a no-op
    elsewhere). Tensors of a few MB come from malloc's heap, and after a block is dropped its
    holes are too scattered for the next block's tensors to reuse them all: without this,
    block-wise loading grows by a block's size or more per block."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(name).malloc_trim(0)
