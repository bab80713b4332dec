"""A pruning run on one model: selected layers + a scorer → plans → masks applied.

Shared by the one-shot verb (``prune_``) and the training loop (gradual schedules), so a
method behaves the same whichever schedule drives it.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from prunekit.calibrate import LossFn, gradient_pass
from prunekit.config import NM, PruneConfig
from prunekit.errors import PrunekitError
from prunekit.layout import canonical, in_features
from prunekit.prune.methods.base import GradientScorer, Scorer
from prunekit.prune.plan import l2_normalized, plan_masks
from prunekit.registry import method_for_config
from prunekit.surgery.masks import Masks, apply_masks_
from prunekit.targets import per_layer, select_layers

log = logging.getLogger(__name__)


def check_nm(layers: dict[str, nn.Module], nm: NM | None) -> None:
    """Every layer's input width must be divisible by M; name the first that is not."""
    if nm is None:
        return
    for name, module in layers.items():
        width = in_features(module)
        if width % nm.m:
            raise PrunekitError(
                f"pattern {nm}: layer {name!r} has input width {width}, not divisible by {nm.m}; "
                f"leave it out with ignore=[{name!r}]"
            )


def layer_targets(
    layers: dict[str, nn.Module], layer_sparsity: dict[str, float], default: float
) -> dict[str, float]:
    """``{layer: sparsity}``: the first selector of ``layer_sparsity`` matching a layer (by exact
    name, class name or ``re:<regex>``) gives its sparsity, ``default`` otherwise. A selector
    matching none of ``layers`` is an error (a typo would silently change nothing)."""
    return per_layer(layers, layer_sparsity, dict.fromkeys(layers, default), "layer_sparsity")


class Pruner:
    """Selects the layers of ``model`` that ``config`` targets and prunes them on request.

    Construction validates everything (selectors, N:M divisibility) and touches nothing.
    """

    def __init__(self, model: nn.Module, config: PruneConfig) -> None:
        if not isinstance(config, PruneConfig):
            raise TypeError(
                f"config must be a pruning config such as MagnitudeConfig(); got "
                f"{type(config).__name__}"
            )
        self.model = model
        self.config = config
        self.method = method_for_config(config)
        self.layers = select_layers(model, config.targets, config.ignore)
        check_nm(self.layers, config.nm)
        self.layer_sparsity = (
            layer_targets(self.layers, config.layer_sparsity, config.target_sparsity)
            if config.layer_sparsity
            else None
        )
        self.scorer: Scorer = self.method.impl(config, self.layers)

    @property
    def needs_observations(self) -> bool:
        """True while a gradient-based scorer has seen no batch yet."""
        return isinstance(self.scorer, GradientScorer) and not self.scorer.has_observations

    def observe(self) -> None:
        self.scorer.observe()

    def calibrate(self, data: Any, loss_fn: LossFn | None, num_samples: int | None) -> None:
        """Feed ``data`` through a gradient pass so gradient-based scorers have observations."""
        gradient_pass(self.model, data, self.observe, loss_fn, num_samples)

    def plan(self, sparsity: float) -> Masks:
        """Masks reaching ``sparsity`` (or the N:M pattern). Weights already zero rank lowest,
        so a pruned weight never comes back.

        With ``config.layer_sparsity``, ``sparsity`` is read on the schedule's scale, whose end
        is ``config.schedule_final``: each layer goes to its own target × ``sparsity /
        schedule_final``.
        """
        with torch.no_grad():
            raw = self.scorer.scores()
            scores = {
                n: s.masked_fill(self.layers[n].weight.detach() == 0, float("-inf"))
                for n, s in raw.items()
            }
        if self.config.scope == "global" and self.scorer.normalize_globally:
            scores = l2_normalized(scores)
        scores = {n: canonical(self.layers[n], s) for n, s in scores.items()}
        target: float | dict[str, float] = sparsity
        if self.layer_sparsity is not None:
            final = self.config.schedule_final
            progress = min(sparsity / final, 1.0) if final > 0 else 1.0
            target = {n: s * progress for n, s in self.layer_sparsity.items()}
        masks = plan_masks(scores, target, self.config.nm, self.config.scope)
        return {n: canonical(self.layers[n], m) for n, m in masks.items()}

    def prune_to(self, sparsity: float) -> Masks:
        """Plan and apply; returns the masks now in force."""
        masks = self.plan(sparsity)
        apply_masks_(self.layers, masks, atomic=True)
        if isinstance(self.scorer, GradientScorer):
            self.scorer.reset()
        log.debug("pruned %d layers to sparsity %.4f", len(masks), sparsity)
        return masks
