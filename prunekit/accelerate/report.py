"""What ``accelerate_`` did, per layer: the kernel chosen, every kernel's time, and why not."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prunekit.report import Report, Table, shape


@dataclass(frozen=True)
class LayerKernel:
    """One layer considered.

    shape: ``(out, in)``. sparsity: fraction of its weight that is zero. kernel: what it runs
    now (``"dense"`` when kept). microseconds: kernel → batch size → median µs per call of the
    layer on its own inputs. speedup: dense time / the chosen kernel's time by batch size (empty
    when kept dense). errors: kernel → relative output error against dense (worst over batch
    sizes). reason: why it kept dense, else None.
    """

    name: str
    shape: tuple[int, int]
    sparsity: float
    kernel: str
    microseconds: dict[str, dict[int, float]]
    speedup: dict[int, float]
    errors: dict[str, float]
    reason: str | None = None


@dataclass(kw_only=True)
class AccelerateReport(Report):
    """Layers swapped to a faster kernel, layers kept dense and why, the threads timed with."""

    layers: list[LayerKernel]
    batch_sizes: list[int]
    threads: int
    extra: dict[str, Any] = field(default_factory=dict)

    computed = ("swapped",)

    @property
    def swapped(self) -> dict[str, str]:
        """Layer name → kernel, for the layers no longer dense."""
        return {r.name: r.kernel for r in self.layers if r.kernel != "dense"}

    def title(self) -> str:
        batches = ", ".join(map(str, self.batch_sizes))
        return (
            f"{self.method}: {len(self.swapped)} of {len(self.layers)} layers swapped "
            f"(timed at batch {batches}, {self.threads} threads), {self.seconds:.1f} s"
        )

    def table(self) -> Table:
        kernels = sorted({k for r in self.layers for k in r.microseconds}, key=_kernel_order)
        columns = ["layer", "shape", "sparsity", "kernel"]
        columns += [f"µs b={b} ({' · '.join(kernels)})" for b in self.batch_sizes]
        columns += ["speed-up", "max rel. error"]
        rows = []
        for r in self.layers:
            times = [
                " · ".join(_us(r.microseconds.get(k, {}).get(b)) for k in kernels)
                for b in self.batch_sizes
            ]
            speedup = ", ".join(f"{s:.2f}×" for _, s in sorted(r.speedup.items())) or "-"
            error = r.errors.get(r.kernel)
            rows.append([r.name, shape(r.shape), f"{r.sparsity:.1%}", r.kernel, *times, speedup,
                         "-" if error is None else f"{error:.1e}"])  # fmt: skip
        return columns, rows

    def notes(self) -> list[str]:
        return [f"kept dense {name}: {why}" for name, why in self.skipped.items()]


def _kernel_order(kernel: str) -> int:
    order = ("dense", "csr/mkl", "csr/bag", "int8")
    return order.index(kernel) if kernel in order else len(order)


def _us(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}" if value >= 10 else f"{value:.1f}"
