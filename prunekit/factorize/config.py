"""The low-rank factorization config: pure, validated data."""

from __future__ import annotations

from typing import Any

from pydantic import Field, ValidationInfo, field_validator, model_validator

from prunekit.config import BaseConfig

DEFAULT_ENERGY = 0.9


class LowRankConfig(BaseConfig):
    """Low-rank factorization by truncated SVD (Denton et al. 2014; Jaderberg et al. 2014).

    Each chosen ``nn.Linear`` becomes two (in → rank, rank → out) and each ``nn.Conv2d`` a k×k
    conv to ``rank`` channels followed by a 1×1 conv, from the SVD of its weight. Set exactly
    one of ``rank_ratio`` and ``energy``; with neither, ``energy`` is 0.9.

    rank_ratio: fraction of each layer's full rank kept, in (0, 1] (rounded up).
    energy: keep the smallest rank whose singular values hold this fraction of the squared
        spectrum (the weight's squared Frobenius norm), in (0, 1].
    min_rank: every factorized layer keeps at least this rank.
    round_to: ranks are rounded up to a multiple of this (e.g. 8 for SIMD-friendly widths),
        never past the full rank.
    targets: layers to factorize: class names, exact module names or ``"re:<regex>"``;
        ``None`` means every ``nn.Linear`` and ``nn.Conv2d``.
    ignore: layers to leave alone, in the same forms.

    A layer is factorized only when the two factors have fewer parameters than its weight;
    the others are listed in ``FactorizeReport.skipped``.
    """

    rank_ratio: float | None = None
    energy: float | None = None
    min_rank: int = Field(1, ge=1)
    round_to: int = Field(1, ge=1)
    targets: list[str] | None = None
    ignore: list[str] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _default_energy(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("rank_ratio") is None and data.get("energy") is None:
            return {**data, "energy": DEFAULT_ENERGY}
        return data

    @field_validator("rank_ratio", "energy")
    @classmethod
    def _fraction(cls, v: float | None, info: ValidationInfo) -> float | None:
        if v is not None and not 0.0 < v <= 1.0:
            raise ValueError(f"{info.field_name} must be in (0, 1]; got {v}")
        return v

    @model_validator(mode="after")
    def _one_rule(self) -> LowRankConfig:
        if self.rank_ratio is not None and self.energy is not None:
            raise ValueError(
                f"set one of rank_ratio and energy, not both; got rank_ratio={self.rank_ratio} "
                f"and energy={self.energy}"
            )
        return self
