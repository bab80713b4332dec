"""One static-int8 region with the repairs: fold BN → equalize (:func:`float_copy`) → torch.ao
convert → per layer, front to back, learned rounding and bias correction against the float
region (:func:`repair_layers_`).

The layers are repaired in execution order so that each sees the int8 activations of the layers
already repaired before it (what it will receive when deployed); its float reference is the
float region's layer on the float activations.
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Collection
from dataclasses import dataclass, field

import torch
from torch import fx, nn
from tqdm.auto import tqdm

from prunekit.quantize.config import Int8StaticConfig
from prunekit.quantize.repairs.adaround import learn_rounding
from prunekit.quantize.repairs.equalize import equalize_
from prunekit.quantize.repairs.layers import QuantLayer, layer_inputs, quant_layers
from prunekit.quantize.unfused import KeptTracer, hide_, restore_

logger = logging.getLogger(__name__)


@dataclass
class RepairStats:
    """What the repairs did in one region (for the quantization report)."""

    equalized_pairs: int = 0
    equalize_sweeps: int = 0
    rounded_layers: int = 0
    bias_corrected_layers: int = 0
    # Mean |float − int8| pre-activation output per layer, before and after the repairs.
    error_before: dict[str, float] = field(default_factory=dict)
    error_after: dict[str, float] = field(default_factory=dict)


def fold_batchnorm(region: nn.Module, ignore: Collection[str] = ()) -> fx.GraphModule:
    """A traced copy of ``region`` (eval mode) with every BatchNorm folded into the conv
    before it (torch.fx's ``fuse``), except into the layers named in ``ignore`` (relative to
    ``region``), whose BatchNorm stays a module of its own; a bare layer is wrapped as torch.ao's
    converter does."""
    from torch.fx.experimental.optimization import fuse

    root = copy.deepcopy(region).eval()
    if not list(root.children()):
        root = nn.Sequential(root)
    hide_(root, ignore)
    traced = fx.GraphModule(root, KeptTracer().trace(root), type(root).__name__)
    folded = fuse(traced, inplace=True, no_trace=True)
    restore_(folded, ignore)
    return folded


def weight_range() -> tuple[int, int]:
    """The int8 code range torch.ao's x86 weight observer uses (also what ``convert`` stored)."""
    from torch.ao.quantization import get_default_qconfig_mapping

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        observer = get_default_qconfig_mapping("x86").global_qconfig.weight()
    return int(observer.quant_min), int(observer.quant_max)


def float_copy(
    region: nn.Module, ignore: Collection[str], equalize: bool
) -> tuple[fx.GraphModule, RepairStats]:
    """The float region the repairs start from: BN folded and, with ``equalize``, equalized
    (layers in ``ignore`` are left out); ``region`` itself is not modified."""
    stats = RepairStats()
    work = fold_batchnorm(region, ignore)
    if equalize:
        result = equalize_(work, ignore)
        stats.equalized_pairs, stats.equalize_sweeps = len(result.pairs), result.sweeps
    return work, stats


def repair_layers_(
    graph: fx.GraphModule,
    work: fx.GraphModule,
    inputs: list[torch.Tensor],
    config: Int8StaticConfig,
    stats: RepairStats,
) -> None:
    """Learned rounding and bias correction, as ``config`` asks, of every int8 layer of
    ``graph`` (converted from ``work``), front to back, against ``work`` on ``inputs`` (the
    region's calibration inputs). Records what it did in ``stats``."""
    qmin, qmax = weight_range()
    float_layers = dict(work.named_modules())
    layers = quant_layers(graph)
    # AdaRound takes seconds per layer: a bar on a terminal (tqdm draws none elsewhere).
    bar = tqdm(layers, desc="int8 repairs", unit="layer", leave=False, disable=None)
    for i, layer in enumerate(bar):
        reference = float_layers[layer.name]
        if not _rounded_from(layer, reference.weight):
            logger.warning(
                "%s: its int8 weights are not the float layer's rounded (torch.ao fused more "
                "into it); left as converted",
                layer.name,
            )
            continue
        x_float = layer_inputs(work, layer.name, inputs)
        x_int8 = layer_inputs(graph, layer.name, inputs)
        with torch.no_grad():
            target = reference(x_float)
        bias, codes = layer.bias, layer.codes
        stats.error_before[layer.name] = _error(layer, x_int8, target, codes, bias)
        if config.rounding == "adaround":
            codes = learn_rounding(
                reference.weight,
                layer.scales,
                qmin,
                qmax,
                layer.op(bias),
                x_int8,
                torch.relu(target) if layer.relu else target,
                iterations=config.rounding_iterations,
                seed=config.seed + i,
            )
            stats.rounded_layers += 1
        if config.bias_correction and bias is not None:
            with torch.no_grad():
                int8_out = layer.pre_activation(x_int8, _dequantized(layer, codes), bias)
                shift = _channel_mean(target, layer.linear) - _channel_mean(int8_out, layer.linear)
            bias = bias + shift
            stats.bias_corrected_layers += 1
        layer.set_(codes, bias)
        stats.error_after[layer.name] = _error(layer, x_int8, target, codes, bias)
        logger.debug(
            "%s: mean |float − int8| %.3g → %.3g",
            layer.name,
            stats.error_before[layer.name],
            stats.error_after[layer.name],
        )


def _rounded_from(layer: QuantLayer, weight: torch.Tensor) -> bool:
    """Whether ``layer``'s int8 weights are ``weight`` rounded to its steps: the float layer is
    then the reference the repairs compare with."""
    if weight.shape != layer.codes.shape:
        return False
    steps = weight.detach() / layer.scales.to(weight.dtype).view(-1, *(1,) * (weight.dim() - 1))
    return bool(((steps - layer.codes).abs() <= 0.5 + 1e-3).all())


def _dequantized(layer: QuantLayer, codes: torch.Tensor) -> torch.Tensor:
    scales = layer.scales.to(torch.float32)
    return codes * scales.view(-1, *(1,) * (codes.dim() - 1))


def _channel_mean(y: torch.Tensor, linear: bool) -> torch.Tensor:
    """The mean of each output channel over samples and positions ``[C]``: ``y`` is ``[N, C,
    ...]`` for a conv, ``[..., C]`` for a linear."""
    if linear:
        return y.flatten(0, -2).mean(dim=0)
    return y.transpose(0, 1).flatten(1).mean(dim=1)


@torch.no_grad()
def _error(
    layer: QuantLayer,
    x_int8: torch.Tensor,
    target: torch.Tensor,
    codes: torch.Tensor,
    bias: torch.Tensor | None,
) -> float:
    out = layer.pre_activation(x_int8, _dequantized(layer, codes), bias)
    return float((out - target).abs().mean())
