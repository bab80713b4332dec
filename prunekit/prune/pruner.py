"""A pruning run on one model: selected layers + a scorer → plans → masks applied.

Shared by the one-shot verb (``prune_``) and the training loop (gradual schedules), so a
method behaves the same whichever schedule drives it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from prunekit.calibrate import LossFn, gradient_pass
from prunekit.config import NM, PruneConfig
from prunekit.errors import PrunekitError
from prunekit.layout import canonical, in_features
from prunekit.memory import release_freed
from prunekit.prune.methods.base import GradientScorer, Scorer
from prunekit.prune.plan import (
    Cut,
    find_cut,
    keep_above_cut,
    l2_normalized,
    nm_mask,
    num_to_prune,
    plan_masks,
)
from prunekit.registry import method_for_config
from prunekit.surgery.masks import Masks, apply_masks_
from prunekit.surgery.transaction import transaction
from prunekit.targets import per_layer, select_layers

log = logging.getLogger(__name__)

# Scores computed from a weight a part at a time hold about this many entries at once.
CHUNK = 1 << 18


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
        return dict(self.iter_masks(sparsity))

    def iter_masks(self, sparsity: float) -> Iterator[tuple[str, torch.Tensor]]:
        """The masks of :meth:`plan`, a layer at a time. A scorer whose scores come from each
        weight alone (``from_weight``: magnitude) is read a part of a layer at a time and a
        layer's mask is made only when it is asked for, so nothing the size of the model is
        held; each layer's weight must be unchanged until its mask is yielded."""
        if not self._per_part:
            yield from self._plan_at_once(sparsity).items()
            return
        targets = self._targets(sparsity)
        if self.config.nm is not None:
            for name in self.layers:
                yield name, self._mask(name, lambda s: nm_mask(s, self.config.nm))
            return
        if isinstance(targets, float) and self.config.scope == "global":
            total = sum(layer.weight.numel() for layer in self.layers.values())
            cut = find_cut(self._all_scores, num_to_prune(total, targets))
            for name in self.layers:
                mask, cut = self._cut_mask(name, cut)
                yield name, mask
            return
        for name, layer in self.layers.items():
            share = targets if isinstance(targets, float) else targets[name]
            k = num_to_prune(layer.weight.numel(), share)
            cut = find_cut(lambda name=name: self._part_scores(name), k)
            yield name, self._cut_mask(name, cut)[0]

    def _targets(self, sparsity: float) -> float | dict[str, float]:
        if self.layer_sparsity is None:
            return sparsity
        final = self.config.schedule_final
        progress = min(sparsity / final, 1.0) if final > 0 else 1.0
        return {n: s * progress for n, s in self.layer_sparsity.items()}

    @property
    def _per_part(self) -> bool:
        if self.scorer.from_weight is None:
            return False
        if self.config.scope == "global" and self.scorer.normalize_globally:
            return False
        # A weight shared by two layers would change under the second one's planning.
        weights = {id(layer.weight) for layer in self.layers.values()}
        return len(weights) == len(self.layers)

    def _part_scores(self, name: str) -> Iterator[torch.Tensor]:
        """The scores of layer ``name`` in its canonical layout, a block of rows at a time
        (weights already zero at -inf), in the order of the flattened canonical scores."""
        layer = self.layers[name]
        w = canonical(layer, layer.weight.detach())
        rows = max(1, CHUNK // max(1, w[0].numel()))
        from_weight = self.scorer.from_weight
        assert from_weight is not None
        for start in range(0, w.shape[0], rows):
            part = w[start : start + rows]
            yield from_weight(part).masked_fill(part == 0, float("-inf"))

    def _all_scores(self) -> Iterator[torch.Tensor]:
        for name in self.layers:
            yield from self._part_scores(name)

    def _cut_mask(self, name: str, cut: Cut) -> tuple[torch.Tensor, Cut]:
        """Layer ``name``'s mask under ``cut``, and the cut left for the layers after it."""

        def keep(scores: torch.Tensor) -> torch.Tensor:
            nonlocal cut
            mask, cut = keep_above_cut(scores, cut)
            return mask

        return self._mask(name, keep), cut

    def _mask(self, name: str, keep: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """Layer ``name``'s mask, ``keep`` applied to its scores a block of rows at a time."""
        layer = self.layers[name]
        weight = canonical(layer, layer.weight)
        mask = torch.empty(weight.shape, dtype=torch.bool, device=weight.device)
        start = 0
        for scores in self._part_scores(name):
            mask[start : start + scores.shape[0]] = keep(scores)
            start += scores.shape[0]
        return canonical(layer, mask)

    def _plan_at_once(self, sparsity: float) -> Masks:
        with torch.no_grad():
            raw = self.scorer.scores()
            scores = {
                n: s.masked_fill(self.layers[n].weight.detach() == 0, float("-inf"))
                for n, s in raw.items()
            }
        if self.config.scope == "global" and self.scorer.normalize_globally:
            scores = l2_normalized(scores)
        scores = {n: canonical(self.layers[n], s) for n, s in scores.items()}
        masks = plan_masks(scores, self._targets(sparsity), self.config.nm, self.config.scope)
        return {n: canonical(self.layers[n], m) for n, m in masks.items()}

    def prune_to(self, sparsity: float) -> Masks:
        """Plan and apply; returns the masks now in force."""
        masks = self.plan(sparsity)
        apply_masks_(self.layers, masks, atomic=True)
        if isinstance(self.scorer, GradientScorer):
            self.scorer.reset()
        log.debug("pruned %d layers to sparsity %.4f", len(masks), sparsity)
        return masks

    def prune_once(self, sparsity: float) -> None:
        """Plan and apply a layer at a time (one-shot pruning): no layer's mask outlives its
        layer. A failure puts back every weight already written (their copies go to a
        temporary file beyond a few MiB, so this holds no second model in memory)."""
        with torch.no_grad(), transaction(self.model) as tx:
            for name, mask in self.iter_masks(sparsity):
                layer = self.layers[name]
                tx.protect([layer.weight])
                apply_masks_({name: layer}, {name: mask})
                del mask
                # This layer's mask and scores lie freed in malloc's heap between longer-lived
                # tensors: hand them back before the next layer's, or the heap keeps growing.
                release_freed()
        if isinstance(self.scorer, GradientScorer):
            self.scorer.reset()
        log.debug("pruned %d layers to sparsity %.4f", len(self.layers), sparsity)
