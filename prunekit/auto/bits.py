"""Bits per layer under a size budget, picked from measured per-layer sensitivity.

Score: each layer alone is shared (k-means) or quantized (RTN, GPTQ) at every width of
``bits``, on a copy of the model; the metric is measured and so are the bytes the saved artifact
gains or loses (``artifact_size``, the whole directory). Plan: one width per layer, the smallest
summed metric drop whose predicted artifact fits ``max_bytes``: a multiple-choice knapsack,
solved exactly as a small integer program by scipy's HiGHS (``scipy.optimize.milp``), as
HAWQ-V3 (Yao et al. 2021) allocates bits. Drops are measured one layer at a time and assumed to
add up; the caller checks the result on the whole model. Apply: the method's config with
``layer_bits``, for ``share_weights_`` / ``quantize_``. The model passed in is never changed.
"""

from __future__ import annotations

import copy
import logging
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import Field, model_validator
from torch import nn
from tqdm.auto import tqdm

from prunekit.artifact.io import artifact_size
from prunekit.config import BaseConfig
from prunekit.errors import PrunekitError
from prunekit.measure.counting import count_params
from prunekit.quantize.api import quantize_
from prunekit.quantize.config import WeightOnlyConfig
from prunekit.report import Report, Table
from prunekit.share.api import share_weights_
from prunekit.share.config import KMeansConfig

log = logging.getLogger(__name__)

Evaluate = Callable[[nn.Module], float]
# Ties in the summed drop (widths a layer takes at no measured cost) go to the larger artifact:
# drops measured one layer at a time understate the joint one, so spare bytes buy precision.
_TIE = 1e-9


class BitsSearchConfig(BaseConfig):
    """Where the per-layer bit search looks, and the size it must fit.

    max_bytes: the saved artifact's budget in bytes (the whole directory ``pk.save`` writes).
    ratio: instead of ``max_bytes``, at least this many times smaller than the model's
        parameters in fp32 (4 bytes each); give one of the two.
    bits: ``(low, high)``, the widths tried for every layer (within what the method stores:
        1..8 for k-means, 2..8 for RTN and GPTQ).
    """

    max_bytes: int | None = Field(None, ge=1)
    ratio: float | None = Field(None, gt=1.0)
    bits: tuple[int, int] = (2, 8)

    @model_validator(mode="after")
    def _one_budget(self) -> BitsSearchConfig:
        if (self.max_bytes is None) == (self.ratio is None):
            raise ValueError(
                f"give exactly one size budget: max_bytes (bytes on disk) or ratio (× smaller "
                f"than fp32); got max_bytes={self.max_bytes}, ratio={self.ratio}"
            )
        lo, hi = self.bits
        if not 1 <= lo <= hi <= 8:
            raise ValueError(
                f"bits must be (low, high) with 1 <= low <= high <= 8; got ({lo}, {hi})"
            )
        return self

    def budget(self, model: nn.Module) -> int:
        """The budget in bytes for ``model``."""
        if self.max_bytes is not None:
            return self.max_bytes
        assert self.ratio is not None
        return int(4 * count_params(model) / self.ratio)


@dataclass(frozen=True)
class BitsPoint:
    """One layer alone at ``bits``: the metric, and the artifact's bytes minus the model's."""

    layer: str
    bits: int
    metric: float
    delta_bytes: int


@dataclass(kw_only=True)
class BitsReport(Report):
    """The chosen width per layer, the measured points behind it and the predicted size.

    layer_bits: ``{layer: bits}``; chosen: the method's config with them (apply it with
    ``share_weights_`` or ``quantize_``); baseline: the metric of the model as given;
    model_bytes: its artifact's size; predicted_bytes: ``model_bytes`` plus each layer's
    measured change at its width; predicted_drop: the summed drops of the chosen points.
    """

    layer_bits: dict[str, int]
    chosen: KMeansConfig | WeightOnlyConfig
    budget_bytes: int
    baseline: float
    model_bytes: int
    predicted_bytes: int
    predicted_drop: float
    points: list[BitsPoint]

    hidden = ("chosen",)

    def title(self) -> str:
        return (
            f"{self.method}: {self.predicted_bytes:,} bytes predicted for a budget of "
            f"{self.budget_bytes:,} ({self.seconds:.1f} s)"
        )

    def table(self) -> Table:
        at = {(p.layer, p.bits): p for p in self.points}
        rows = [
            [name, str(bits), f"{self.baseline - at[name, bits].metric:.4g}",
             f"{at[name, bits].delta_bytes:+,}"]
            for name, bits in self.layer_bits.items()
        ]  # fmt: skip
        return ["layer", "bits", "drop alone", "Δ bytes alone"], rows


@dataclass(frozen=True)
class BitsProfile:
    """What :func:`bits_profile` measured: the model's metric and artifact bytes, and one
    :class:`BitsPoint` per (layer, width)."""

    baseline: float
    model_bytes: int
    points: list[BitsPoint]

    @property
    def smallest_bytes(self) -> int:
        """The predicted artifact with every layer at its smallest measured size."""
        layers = dict.fromkeys(p.layer for p in self.points)
        return self.model_bytes + sum(
            min(p.delta_bytes for p in self.points if p.layer == n) for n in layers
        )


def bits_profile(
    model: nn.Module,
    config: KMeansConfig | WeightOnlyConfig,
    evaluate: Evaluate,
    bits: tuple[int, int] = (2, 8),
    *,
    data: Iterable[Any] | None = None,
    progress: bool = True,
) -> BitsProfile:
    """Each layer ``config`` applies to, alone (on a copy), at every width in ``bits``
    (inclusive): ``evaluate`` of the result and the saved artifact's bytes less ``model``'s.

    evaluate: ``evaluate(model) -> float``, higher is better (accuracy, recall@1…), called
        once on ``model`` and once per (layer, width). data: calibration batches for GPTQ.
    ``model`` is not changed. Compute it once to plan several budgets with :func:`search_bits`.
    """
    if not isinstance(config, KMeansConfig | WeightOnlyConfig):
        raise TypeError(
            f"config: expected KMeansConfig, RTNConfig or GPTQConfig; got {type(config).__name__}"
        )
    low_ok = 1 if isinstance(config, KMeansConfig) else 2
    if bits[0] < low_ok:
        raise PrunekitError(
            f"bits: {config.method} stores {low_ok}..8 bits; got low={bits[0]}: "
            f"use bits=({low_ok}, {bits[1]})"
        )
    widths = list(range(bits[0], bits[1] + 1))
    layers = _layers(model, config, widths[0], data)
    baseline = float(evaluate(model))
    model_bytes = artifact_size(model)
    points = []
    grid = [(name, b) for name in layers for b in widths]
    for name, b in tqdm(grid, desc="bits per layer", disable=None if progress else True):
        work = copy.deepcopy(model)
        _apply(work, _alone(config, name, b), data)
        points.append(BitsPoint(name, b, float(evaluate(work)), artifact_size(work) - model_bytes))
        log.info("bits: %s at %d bits → %s", name, b, points[-1])
    return BitsProfile(baseline, model_bytes, points)


def search_bits(
    model: nn.Module,
    config: KMeansConfig | WeightOnlyConfig,
    evaluate: Evaluate,
    search: BitsSearchConfig,
    *,
    data: Iterable[Any] | None = None,
    profile: BitsProfile | None = None,
    progress: bool = True,
) -> BitsReport:
    """The widths per layer for ``config``'s method (k-means sharing, RTN or GPTQ) that keep
    ``model``'s saved artifact within ``search``'s budget at the least summed metric drop.

    evaluate, data: as :func:`bits_profile`, which measures the layers ``config`` applies to
    (its ``targets``/``ignore``) unless ``profile`` (of this model, config and ``search.bits``)
    is given. ``config``'s ``layer_bits`` and ``conv_bits`` are replaced by the choice.
    ``model`` is not changed. Returns a :class:`BitsReport`; ``report.chosen`` is the config
    to apply. PrunekitError if even the smallest widths exceed the budget.
    """
    if not isinstance(search, BitsSearchConfig):
        raise TypeError(f"search: expected a BitsSearchConfig; got {type(search).__name__}")
    start = time.perf_counter()
    if profile is None:
        profile = bits_profile(model, config, evaluate, search.bits, data=data, progress=progress)
    budget = search.budget(model)
    if profile.smallest_bytes > budget:
        raise PrunekitError(
            f"size budget: {budget:,} bytes; with every layer at its smallest width tried the "
            f"artifact takes {profile.smallest_bytes:,}: raise the budget, lower bits' low end "
            f"or prune first"
        )
    baseline, points = profile.baseline, profile.points
    choice = allocate(points, baseline, budget - profile.model_bytes)
    at = {(p.layer, p.bits): p for p in points}
    predicted = profile.model_bytes + sum(at[n, b].delta_bytes for n, b in choice.items())
    return BitsReport(
        method=f"search-bits/{config.method}",
        config={"search": search.to_dict(), "method": config.to_dict()},
        layer_bits=choice,
        chosen=_with(config, layer_bits=choice),
        budget_bytes=budget,
        baseline=baseline,
        model_bytes=profile.model_bytes,
        predicted_bytes=predicted,
        predicted_drop=sum(baseline - at[n, b].metric for n, b in choice.items()),
        points=points,
        seconds=time.perf_counter() - start,
    )


def allocate(points: list[BitsPoint], baseline: float, max_delta: int) -> dict[str, int]:
    """One width per layer minimising the summed drop ``baseline − metric`` (negative drops
    count as 0) with the summed ``delta_bytes`` at most ``max_delta``; pure.

    PrunekitError if no choice fits (the budget is below every layer at its smallest)."""
    from scipy.optimize import Bounds, LinearConstraint, milp

    layers = list(dict.fromkeys(p.layer for p in points))
    drop = np.array([max(baseline - p.metric, 0.0) for p in points])
    size = np.array([float(p.delta_bytes) for p in points])
    smallest = sum(min(p.delta_bytes for p in points if p.layer == n) for n in layers)
    if smallest > max_delta:
        raise PrunekitError(
            f"size budget: the smallest widths tried change the size by {smallest:+,} bytes; "
            f"the budget needs {max_delta:+,}: raise the budget, lower bits' low end or prune "
            f"first"
        )
    one_each = np.array([[p.layer == n for p in points] for n in layers], dtype=float)
    constraints = [
        LinearConstraint(one_each, 1, 1),
        LinearConstraint(size[None, :], -np.inf, max_delta),
    ]
    scale = max(np.abs(size).max(), 1.0)
    result = milp(
        drop - _TIE * size / scale,
        constraints=constraints,
        integrality=np.ones(len(points)),
        bounds=Bounds(0, 1),
    )
    assert result.success, result.message  # feasible: the smallest widths fit
    picked = [p for p, x in zip(points, result.x, strict=True) if x > 0.5]
    return {n: next(p.bits for p in picked if p.layer == n) for n in layers}


def _with(config: Any, **fields: Any) -> Any:
    """A validated copy of ``config`` with ``fields``; for k-means without ``conv_bits``, which
    would override ``bits`` for convolutions."""
    if isinstance(config, KMeansConfig):
        fields.setdefault("conv_bits", None)
    return type(config)(**{**config.model_dump(), **fields})


def _alone(config: Any, name: str, bits: int) -> Any:
    """``config`` applied to the layer ``name`` only, at ``bits``."""
    exact = [f"re:^{re.escape(name)}$"]
    return _with(config, targets=exact, ignore=[], bits=bits, layer_bits={})


def _apply(model: nn.Module, config: KMeansConfig | WeightOnlyConfig, data: Any) -> Any:
    if isinstance(config, KMeansConfig):
        return share_weights_(model, config)
    return quantize_(model, config, data)


def _layers(
    model: nn.Module, config: KMeansConfig | WeightOnlyConfig, bits: int, data: Any
) -> list[str]:
    """The layers ``config`` applies to, found by applying it to a copy (its layer choice,
    tied weights and block rules included)."""
    report = _apply(copy.deepcopy(model), _with(config, bits=bits, layer_bits={}), data)
    return [row.name for row in report.layers]
