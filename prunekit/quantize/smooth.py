"""SmoothQuant (Xiao et al. 2023): activation outliers moved into the weights before int8.

int8-dynamic quantizes a layer's whole input with one scale per batch, so a few channels with
large values (the outliers transformers grow) leave the rest with few levels. Per input channel
``j``, ``s_j = max|X_j|^α / max|W_j|^(1−α)`` (X from calibration data; W every reader's weight
column) divides the activation and multiplies the weight column: the product is unchanged and
both are flatter. The scales are folded into the norm whose output X is (its weight and bias
divided by ``s``) and into every layer reading it (q/k/v together; an MLP's up/gate
projections), so nothing runs at inference that did not before.

A norm is smoothed only if its output feeds nothing but layers being quantized (see
``smooth_trace``); pre-norm transformers (LLaMA, GPT-2, OPT) qualify, post-norm ones (BERT,
MiniLM) do not, as their norm output is also the residual.

score (``smoothing_scales``, pure) → plan (``plan_smoothing``, reads the model) → apply
(``prunekit.surgery.rescale``, inside one transaction).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from typing import Any

import torch
from torch import nn

from prunekit.data.batches import split_batch, take_samples
from prunekit.errors import PrunekitError
from prunekit.layout import canonical
from prunekit.quantize.api import int8_dynamic_
from prunekit.quantize.config import SmoothQuantConfig
from prunekit.quantize.report import QuantizeReport
from prunekit.quantize.select import choose_linears, linear_kinds
from prunekit.quantize.smooth_trace import NormUse, channel_max, is_norm, norm_uses
from prunekit.report import Report, Table
from prunekit.share.layers import SharedLinear
from prunekit.surgery.rescale import fold_input_scales_, folded_tensors
from prunekit.surgery.transaction import Transaction, transaction
from prunekit.targets import matches

# A fold is accepted when the norm with its weight (and bias) divided by s gives its old output
# divided by s to float32 rounding; a norm computing something else (Gemma's (1 + w)·x̂) fails.
FOLD_RTOL = 1e-4


def smoothing_scales(act_max: torch.Tensor, weight_max: torch.Tensor, alpha: float) -> torch.Tensor:
    """``s [C] = act_max^α / weight_max^(1−α)``; 1 for a channel that is never active or has
    no weight (dividing by its scale would blow up), clamped to [1e-5, 1e5].

    act_max: max |X_j| over the calibration tokens [C]. weight_max: max |W_ij| over the rows of
    every layer reading X [C]."""
    s = act_max.float().pow(alpha) / weight_max.float().pow(1 - alpha)
    dead = (act_max <= 0) | (weight_max <= 0) | ~torch.isfinite(s)
    return torch.where(dead, torch.ones_like(s), s).clamp(1e-5, 1e5)


def flatness(channel_max: torch.Tensor) -> float:
    """max over mean of the per-channel maxima: 1 when every channel reaches the same range."""
    mean = float(channel_max.mean())
    return float(channel_max.max()) / mean if mean > 0 else 1.0


@dataclass(frozen=True)
class SmoothGroup:
    """One norm and the layers reading its output, with the scales moved between them.
    flatness_before/after: :func:`flatness` of the norm's output before and after."""

    norm: str
    readers: tuple[str, ...]
    scales: torch.Tensor
    flatness_before: float
    flatness_after: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "norm": self.norm,
            "readers": list(self.readers),
            "scale_min": float(self.scales.min()),
            "scale_max": float(self.scales.max()),
            "flatness_before": self.flatness_before,
            "flatness_after": self.flatness_after,
        }


@dataclass(kw_only=True)
class SmoothReport(Report):
    """The norms smoothed, and the layers to be quantized that were not (``unsmoothed``: why)."""

    groups: list[SmoothGroup]
    unsmoothed: dict[str, str] = field(default_factory=dict)

    def title(self) -> str:
        norms, readers = len(self.groups), sum(len(g.readers) for g in self.groups)
        return (
            f"{self.method}: {_count(norms, 'norm')} smoothed into {_count(readers, 'layer')}, "
            f"{_count(len(self.unsmoothed), 'layer')} unsmoothed, {self.seconds:.2f} s"
        )

    def table(self) -> Table:
        rows = [[g.norm, ", ".join(r.rpartition(".")[2] for r in g.readers),
                 f"{float(g.scales.min()):.3g}–{float(g.scales.max()):.3g}",
                 f"{g.flatness_before:.1f} → {g.flatness_after:.1f}"]
                for g in self.groups]  # fmt: skip
        return ["norm", "readers", "scales", "act max/mean"], rows

    def notes(self) -> list[str]:
        return [f"unsmoothed {n}: {why}" for n, why in self.unsmoothed.items()]


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


@dataclass(kw_only=True)
class SmoothQuantReport(QuantizeReport):
    """int8-dynamic's report, with the smoothing that preceded it."""

    smoothing: SmoothReport

    def notes(self) -> list[str]:
        return [self.smoothing.title(), *super().notes(), *self.smoothing.notes()]


@torch.no_grad()
def plan_smoothing(
    model: nn.Module, config: SmoothQuantConfig, data: Iterable[Any], layers: dict[str, nn.Module]
) -> SmoothReport:
    """The groups to smooth and why the other ``layers`` (those to be quantized) are not;
    reads the model only. ``data``: calibration batches, up to ``config.num_samples`` samples.
    """
    start = time.perf_counter()
    batches = list(take_samples(data, config.num_samples))
    if not batches:
        raise PrunekitError("data: got no calibration batches; pass at least one batch")
    norms = {n: m for n, m in model.named_modules() if is_norm(m)}
    kinds = (*linear_kinds(), SharedLinear)
    readable = {n: m for n, m in model.named_modules() if isinstance(m, kinds)}
    was_training = model.training
    model.eval()  # no dropout in the statistics
    try:
        uses = norm_uses(model, split_batch(batches[0])[0], norms, readable)
        candidates = {n: u for n, u in uses.items() if u.readers}
        act_max = channel_max(model, batches, {n: norms[n] for n in candidates})
    finally:
        model.train(was_training)
    groups, why_not = [], {}
    for name, use in candidates.items():
        reason = _refusal(name, norms[name], use, layers, config)
        if reason is None:
            weights = [canonical(readable[r], readable[r].weight.detach()) for r in use.readers]
            w_max = torch.cat(weights).abs().amax(dim=0)
            s = smoothing_scales(act_max[name], w_max, config.alpha)
            reason = _fold_mismatch(norms[name], use.sample, s)
        if reason is not None:
            why_not.update(dict.fromkeys(use.readers, reason))
            continue
        before, after = flatness(act_max[name]), flatness(act_max[name] / s)
        groups.append(SmoothGroup(name, use.readers, s, before, after))
    smoothed = {r for g in groups for r in g.readers}
    unsmoothed = {
        n: why_not.get(n, "its input is not a norm's output: no norm to fold a scale into")
        for n in layers
        if n not in smoothed
    }
    return SmoothReport(
        method=config.method,
        config=config.to_dict(),
        seconds=time.perf_counter() - start,
        groups=groups,
        unsmoothed=unsmoothed,
    )


def _refusal(
    name: str,
    norm: nn.Module,
    use: NormUse,
    layers: dict[str, nn.Module],
    config: SmoothQuantConfig,
) -> str | None:
    if any(matches(sel, name, norm) for sel in config.ignore):
        return f"its norm {name} is in ignore"
    if use.other is not None:
        hint = " (in a post-norm block: the residual add)" if "add" in use.other else ""
        return (
            f"{name}'s output is also read by {use.other}{hint}, which a folded scale would change"
        )
    left_out = [r for r in use.readers if r not in layers]
    if left_out:
        return f"{name} also feeds {left_out[0]}, which is not quantized"
    shared = [r for r in use.readers if isinstance(layers[r], SharedLinear)]
    if shared:
        return f"{name} feeds {shared[0]}, whose weights are a shared codebook"
    return None


def _fold_mismatch(
    norm: nn.Module, sample: tuple[torch.Tensor, torch.Tensor], s: torch.Tensor
) -> str | None:
    trial = copy.deepcopy(norm)
    fold_input_scales_(trial, [], s)
    x, expected = sample
    got = trial(x) * s.to(x.dtype)
    err = float((got - expected).norm() / expected.norm().clamp(min=1e-12))
    if err > FOLD_RTOL:
        return (
            f"{type(norm).__name__} does not compute weight·x̂ + bias (a folded scale changed its "
            f"output by {err:.1e}); it cannot carry the scale"
        )
    return None


def apply_smoothing_(model: nn.Module, plan: SmoothReport, tx: Transaction) -> None:
    """Fold every group's scales in place; ``tx``: the open transaction that will undo it."""
    modules = dict(model.named_modules())
    for g in plan.groups:
        norm, readers = modules[g.norm], [modules[r] for r in g.readers]
        tx.protect(folded_tensors(norm, readers))
        fold_input_scales_(norm, readers, g.scales)


def _layers(model: nn.Module, config: SmoothQuantConfig) -> dict[str, nn.Module]:
    # The layers int8_dynamic_ will quantize: the same choice, so no reader is left in float.
    kinds = (*linear_kinds(), SharedLinear)
    return choose_linears(model, config, min_features=config.min_features, kinds=kinds)[0]


def _check_data(data: Iterable[Any] | None) -> Iterable[Any]:
    if data is None:
        raise PrunekitError(
            "data: smoothquant reads activation ranges from calibration batches; pass data=... "
            "(CLI: --data SPEC)"
        )
    return data


def smooth_(
    model: nn.Module, config: SmoothQuantConfig, data: Iterable[Any] | None
) -> SmoothReport:
    """Smooth ``model`` in place, in floating point (its outputs stay the same up to rounding);
    returns which norms were smoothed and which layers were not, and why.

    The layers considered are those ``quantize_(model, config)`` would quantize (``targets``,
    ``ignore``, ``min_features``); a model smoothed here can be quantized by another tool (the
    ONNX/ExecuTorch exporters' int8). data: calibration batches (``config.num_samples``).
    If this raises, the model is unchanged.
    """
    if not isinstance(config, SmoothQuantConfig):
        raise TypeError(f"config: expected a SmoothQuantConfig; got {type(config).__name__}")
    plan = plan_smoothing(model, config, _check_data(data), _layers(model, config))
    with transaction(model) as tx:
        apply_smoothing_(model, plan, tx)
    return plan


@torch.no_grad()
def smoothquant_(
    model: nn.Module, config: SmoothQuantConfig, data: Iterable[Any] | None = None
) -> SmoothQuantReport:
    """The registered ``smoothquant`` method: :func:`smooth_`, then int8-dynamic."""
    plan = plan_smoothing(model, config, _check_data(data), _layers(model, config))
    with transaction(model) as tx:
        apply_smoothing_(model, plan, tx)
        report = int8_dynamic_(model, config, data)
    values = {f.name: getattr(report, f.name) for f in fields(report) if f.init}
    return SmoothQuantReport(**values, smoothing=plan)
