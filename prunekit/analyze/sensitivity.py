"""Sensitivity analysis: prune one layer alone at a sweep of sparsities and measure the metric.

Layers whose metric falls fast are fragile; the profile suggests a per-layer sparsity table
(``layer_sparsity``) for a prune config. Every point starts from the user's weights and the
user's model is bit-identical afterwards.
"""

from __future__ import annotations

import copy
import itertools
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn

from prunekit.analyze.parallel import BACKENDS, Backend, map_trials
from prunekit.analyze.profile import SensitivityProfile, SensitivityRow
from prunekit.calibrate import find_blocks
from prunekit.config import PruneConfig
from prunekit.data.batches import take_samples
from prunekit.errors import PrunekitError
from prunekit.prune.api import prune_
from prunekit.prune.methods import MagnitudeConfig
from prunekit.prune.methods.calibrated import CalibratedConfig
from prunekit.prune.structured import prune_structured_
from prunekit.targets import select_layers

log = logging.getLogger(__name__)

DEFAULT_RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)

Evaluate = Callable[[nn.Module], float]


def analyze_sensitivity(
    model: nn.Module,
    evaluate: Evaluate,
    *,
    config: PruneConfig | None = None,
    ratios: Sequence[float] = DEFAULT_RATIOS,
    layers: Sequence[str] | None = None,
    data: Iterable[Any] | None = None,
    example_inputs: Any = None,
    backend: Backend = "auto",
    num_workers: int | None = None,
    progress: bool = True,
    metric_name: str = "metric",
) -> SensitivityProfile:
    """Prune each layer alone to each of ``ratios`` and measure ``evaluate(model)``.

    evaluate: ``evaluate(model) -> float``, **higher is better** (accuracy, recall@1, …; pass a
        negated loss or perplexity). Called once on the dense model for the baseline, then once
        per point.
    config: the method and pattern (default: magnitude, unstructured); its ``targets`` and
        ``ignore`` pick the candidate layers, its ``sparsity`` is replaced by each ratio.
        ``N:M`` patterns have one point per layer (sparsity N/M; ``ratios`` unused). ``channel``
        and ``head`` prune the units of the group each layer produces (via ``layer_sparsity``),
        rebuilt on a copy of the model.
    layers: only these (exact module names), in model order; default all candidates.
    data: calibration batches for methods that need them (Taylor, Wanda, SparseGPT), and for
        structured patterns the batch traced when ``example_inputs`` is not given.
    backend, num_workers: see :func:`prunekit.analyze.parallel.map_trials`.

    Returns a :class:`SensitivityProfile` with ``len(layers) × len(ratios)`` rows.
    """
    config = MagnitudeConfig() if config is None else config
    if backend not in BACKENDS:
        raise PrunekitError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    sweep = _ratios(config, ratios)
    batches = _calibration_batches(config, data)
    candidates = _candidates(model, config, batches, example_inputs)
    names = _pick(candidates, layers)
    params = {n: candidates[n].weight.numel() for n in names}
    points = [(n, s) for n in names for s in sweep]
    baseline = float(evaluate(model))
    log.info("sensitivity: %d layers × %d sparsities, baseline %.4g", len(names), len(sweep),
             baseline)  # fmt: skip
    trial = _Trial(model, evaluate, config, batches, example_inputs)
    metrics = map_trials(trial, points, backend, num_workers, progress=progress, desc="sensitivity")
    rows = [
        SensitivityRow(n, s, float(m), params[n]) for (n, s), m in zip(points, metrics, strict=True)
    ]
    return SensitivityProfile(baseline, rows, metric_name)


def _ratios(config: PruneConfig, ratios: Sequence[float]) -> list[float]:
    if not isinstance(config, PruneConfig):
        raise PrunekitError(
            f"config must be a pruning config such as MagnitudeConfig(); got "
            f"{type(config).__name__}"
        )
    if config.needs_training:
        raise PrunekitError(
            f"config: {type(config).__name__} learns its scores while training, so a one-shot "
            f"sweep cannot measure it; use MagnitudeConfig or TaylorConfig"
        )
    if config.nm is not None:
        return [config.target_sparsity]
    sweep = sorted(set(ratios))
    if not sweep or not all(0.0 <= s < 1.0 for s in sweep):
        raise PrunekitError(f"ratios must be sparsities in [0, 1); got {list(ratios)}")
    return sweep


def _candidates(
    model: nn.Module, config: PruneConfig, data: Iterable[Any] | None, example_inputs: Any
) -> dict[str, nn.Module]:
    """The layers the config would prune, each a prunable layer with a ``weight``."""
    layers = select_layers(model, config.targets, config.ignore)
    if config.structured:
        report = prune_structured_(
            model, config.with_sparsity(0.0), data, example_inputs=example_inputs, dry_run=True
        )
        return {g.name: layers[g.name] for g in report.groups if g.name in layers}
    if isinstance(config, CalibratedConfig) and config.targets is None:
        # Wanda/SparseGPT prune only inside a transformer's repeated blocks by default.
        blocks = find_blocks(model)
        if blocks is not None:
            inside = tuple(f"{name}." for name, _ in blocks)
            return {n: m for n, m in layers.items() if n.startswith(inside)}
    return layers


def _pick(candidates: dict[str, nn.Module], layers: Sequence[str] | None) -> list[str]:
    if not candidates:
        raise PrunekitError("model has no layer this config can prune; check targets and ignore")
    if layers is None:
        return list(candidates)
    unknown = [n for n in layers if n not in candidates]
    if unknown:
        raise PrunekitError(
            f"layers: {unknown} are not layers this config prunes; choose from: "
            f"{', '.join(candidates)}"
        )
    return [n for n in candidates if n in set(layers)]


def _calibration_batches(config: PruneConfig, data: Iterable[Any] | None) -> list[Any] | None:
    """The batches every point needs, read once (a one-shot iterator would be empty after the
    first point, and a shuffling loader would give each point other samples): the method's
    ``num_samples``, or one batch to trace for structured patterns, or none."""
    if data is None and config.needs_data:
        raise PrunekitError(
            f"data: {type(config).__name__} needs batches of labelled data to score weights; "
            f"pass data=[(inputs, labels), ...]"
        )
    if data is None or not (config.needs_data or config.structured):
        return None
    if config.needs_data:
        return list(take_samples(data, getattr(config, "num_samples", None)))
    return list(itertools.islice(data, 1))


class _Trial:
    """One point: prune ``layer`` alone to ``sparsity``, evaluate, put the weights back.

    A plain class (not a closure) so that Ray can pickle it, with the model, to its workers;
    locally it runs on the caller's model and restores the layer's tensors bit for bit.
    """

    def __init__(
        self,
        model: nn.Module,
        evaluate: Evaluate,
        config: PruneConfig,
        data: list[Any] | None,
        example_inputs: Any,
    ) -> None:
        self.model = model
        self.evaluate = evaluate
        self.config = config
        self.data = data
        self.example_inputs = example_inputs

    def __call__(self, point: tuple[str, float]) -> float:
        layer, sparsity = point
        if self.config.structured:
            return self._structured(layer, sparsity)
        exact = f"re:^{re.escape(layer)}$"
        fields: dict[str, Any] = {
            "targets": [exact], "ignore": [], "scope": "layer", "layer_sparsity": {}
        }  # fmt: skip
        if self.config.nm is None:
            fields["sparsity"] = sparsity
        config = self.config.model_copy(update=fields)
        module = self.model.get_submodule(layer)
        saved = {k: v.detach().clone() for k, v in module.state_dict(keep_vars=True).items()}
        try:
            prune_(self.model, type(config)(**config.model_dump()), data=self.data)
            return float(self.evaluate(self.model))
        finally:
            with torch.no_grad():
                current = module.state_dict(keep_vars=True)
                for k, v in saved.items():
                    current[k].copy_(v)

    def _structured(self, layer: str, sparsity: float) -> float:
        work = copy.deepcopy(self.model)
        alone = {"sparsity": 0.0, "scope": "layer", "layer_sparsity": {layer: sparsity},
                 "macs_reduction": None}  # fmt: skip
        config = self.config.model_copy(update=alone)
        prune_structured_(
            work, type(config)(**config.model_dump()), self.data, example_inputs=self.example_inputs
        )
        return float(self.evaluate(work))
