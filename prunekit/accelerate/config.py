"""``AccelerateConfig``: which kernels ``accelerate_`` tries, where, and what it takes to swap."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from prunekit.config import BaseConfig

Kernel = Literal["dense", "csr", "int8"]


class AccelerateConfig(BaseConfig):
    """Per layer, the fastest measured kernel whose outputs stay within ``rtol``.

    kernels: the kernels tried (``"csr"`` measures two implementations, ``csr/mkl`` and
        ``csr/bag``, see :mod:`prunekit.accelerate.kernels`). ``"dense"`` among them means a
        kernel must be measured faster (by ``min_speedup`` at every batch size) to replace the
        dense layer; without it the listed kernels are forced: the fastest of those whose
        outputs stay within ``rtol`` replaces the layer, whatever dense's time.
    batch_sizes: the batch sizes timed (the example inputs cut or repeated to each); a kernel
        must win at all of them. ``None``: the example inputs' own batch size.
    targets/ignore: layers considered (class names, exact module names or ``"re:<regex>"``);
        ``None`` means every ``nn.Linear`` (and transformers' ``Conv1D``).
    rtol: largest relative error ``‖y_kernel − y_dense‖ / ‖y_dense‖`` allowed on the layer's own
        inputs, captured from the example inputs at each batch size. CSR is exact up to float
        rounding (≈1e-7); int8 dynamic was 1–5 % off per layer on MiniLM.
    min_speedup: how much faster than dense a kernel must be measured, so timing noise does not
        swap a layer.
    min_sparsity: CSR is tried only on layers at least this sparse (below 50 % it lost to dense
        at every shape and batch size measured).
    repeats: timed samples per kernel, interleaved between the kernels; the median counts.
    """

    kernels: list[Kernel] = Field(default_factory=lambda: ["dense", "csr", "int8"], min_length=1)
    batch_sizes: list[int] | None = None
    targets: list[str] | None = None
    ignore: list[str] = Field(default_factory=list)
    rtol: float = Field(1e-2, ge=0.0)
    min_speedup: float = Field(1.1, gt=0.0)
    min_sparsity: float = Field(0.5, ge=0.0, le=1.0)
    repeats: int = Field(7, ge=1, le=1000)

    method = "accelerate"

    @field_validator("kernels")
    @classmethod
    def _distinct_kernels(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"kernels must not repeat a kernel; got {value}")
        if value == ["dense"]:
            raise ValueError("kernels=['dense'] leaves nothing to try; add 'csr' or 'int8'")
        return value

    @field_validator("batch_sizes")
    @classmethod
    def _positive_batches(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and (not value or any(b < 1 for b in value)):
            raise ValueError(f"batch_sizes must be positive integers (or None); got {value}")
        return value
