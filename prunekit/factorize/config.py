"""The low-rank factorization config: pure, validated data."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from prunekit.config import BaseConfig

DEFAULT_ENERGY = 0.9
# The ways to choose ranks; exactly one is set.
RULES = ("rank_ratio", "energy", "macs_reduction", "params_reduction")


class LowRankConfig(BaseConfig):
    """Low-rank factorization by truncated SVD (Denton et al. 2014; Jaderberg et al. 2014).

    Each chosen ``nn.Linear`` becomes two (in → rank, rank → out) and each ``nn.Conv2d`` two
    convolutions, from the SVD of its weight. Set exactly one of ``rank_ratio``, ``energy``,
    ``macs_reduction`` and ``params_reduction``; with none, ``energy`` is 0.9.

    rank_ratio: fraction of each layer's full rank kept, in (0, 1] (rounded up).
    energy: keep the smallest rank whose singular values hold this fraction of the squared
        spectrum (the weight's squared Frobenius norm), in (0, 1].
    macs_reduction: ranks chosen per layer so that the whole model's forward pass needs this
        many times fewer multiply-accumulates (> 1; counted on ``example_inputs``). One energy
        threshold is searched for all layers: a layer whose spectrum falls off fast gets a low
        rank, a layer that needs all of its rank stays as it is.
    params_reduction: the same for the whole model's parameter count.
    decomposition: how a k×k ``nn.Conv2d`` is split. ``"channel"``: a k×k conv to ``rank``
        channels then a 1×1 conv (Denton et al. 2014; weight as ``[out, in·k·k]``).
        ``"spatial"``: a k×1 conv to ``rank`` channels then a 1×k conv (Jaderberg et al. 2014,
        Tai et al. 2016; weight as ``[out·k, in·k]``), which keeps more rank for the same
        cost when filters are close to separable. Linear layers are split one way either way.
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
    macs_reduction: float | None = Field(None, gt=1.0)
    params_reduction: float | None = Field(None, gt=1.0)
    decomposition: Literal["channel", "spatial"] = "channel"
    min_rank: int = Field(1, ge=1)
    round_to: int = Field(1, ge=1)
    targets: list[str] | None = None
    ignore: list[str] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _default_energy(cls, data: Any) -> Any:
        if isinstance(data, dict) and all(data.get(rule) is None for rule in RULES):
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
        chosen = {rule: getattr(self, rule) for rule in RULES if getattr(self, rule) is not None}
        if len(chosen) > 1:
            given = " and ".join(f"{k}={v}" for k, v in chosen.items())
            raise ValueError(f"set one of {', '.join(RULES)}, not several; got {given}")
        return self

    @property
    def budget(self) -> tuple[str, float] | None:
        """``("macs", factor)`` or ``("params", factor)`` when ranks come from a budget."""
        if self.macs_reduction is not None:
            return "macs", self.macs_reduction
        if self.params_reduction is not None:
            return "params", self.params_reduction
        return None
