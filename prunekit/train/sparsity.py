"""Keeping pruned weights at zero through training, and pruning on a schedule while it trains.

A weight that is zero in a prunable layer when training starts, or that a schedule prunes, stays
exactly zero: its gradient is zeroed before the optimizer step (so optimizer state never pulls
it back) and the mask is written again after it. The masks live only in the weights' zeros, so
nothing (hooks, reparametrizations) lingers on the model when training ends.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from prunekit.calibrate import LossFn
from prunekit.config import PruneConfig
from prunekit.data.batches import first_batch, split_batch
from prunekit.errors import PrunekitError
from prunekit.prune.pruner import Pruner
from prunekit.prune.schedule import AGP, Schedule, make_schedule
from prunekit.prune.structured.gradual import StructuredSteps
from prunekit.surgery.masks import Masks, apply_masks_, mask_grads_, masks_from_zeros
from prunekit.targets import select_layers


class SparsityKeeper:
    """The masks of the prunable layers, and the pruning ``schedule`` of ``prune`` (if any).

    Built before training: every check (method, schedule, selectors) runs here, touching
    nothing. With a structured pattern each pruning step rebuilds layers smaller
    (:meth:`prune_step` returns True: the parameters changed).
    """

    def __init__(
        self,
        model: nn.Module,
        data: Any,
        *,
        prune: PruneConfig | None = None,
        schedule: str | Schedule | None = None,
        loss_fn: LossFn | None = None,
        example_inputs: Any = None,
        keep_sparsity: bool = True,
    ) -> None:
        self.data, self.loss_fn, self.keep = data, loss_fn, keep_sparsity
        self.config = prune
        self.structured: StructuredSteps | None = None
        self.pruner: Pruner | None = None
        self.plan = make_schedule(schedule) if prune is not None else None
        if prune is not None and prune.structured:
            if example_inputs is None:
                example_inputs, _ = split_batch(first_batch(data))
            self.structured = StructuredSteps(prune, example_inputs)
        elif prune is not None:
            self.pruner = Pruner(model, prune)
        if prune is not None and prune.needs_training and not isinstance(self.plan, AGP):
            name = self.pruner.method.name if self.pruner else type(prune).__name__
            raise PrunekitError(
                f"schedule: {name!r} learns its scores while training and needs a gradual "
                f"schedule; got {type(self.plan).__name__}: pass schedule='agp'"
            )
        self.layers = self.pruner.layers if self.pruner else _prunable_or_empty(model)
        self.masks: Masks = {}
        self.events: list[dict[str, Any]] = []

    def describe(self) -> dict[str, Any] | None:
        """The pruning that runs while training, for the report: method, config, schedule."""
        if self.config is None:
            return None
        from prunekit.registry import method_for_config

        return {
            "method": method_for_config(self.config).name,
            "config": self.config.to_dict(),
            "schedule": type(self.plan).__name__.lower(),
        }

    def begin(self) -> None:
        """Take the masks from the weights' zeros as training starts (after every rank has
        rank 0's weights)."""
        self.masks = masks_from_zeros(self.layers) if self.keep else {}

    def prune_step(self, model: nn.Module, step: int, total_steps: int) -> bool:
        """Prune to the schedule's sparsity at ``step`` (if it asks for one); True when layers
        were rebuilt, so the optimizer must be made anew."""
        if self.plan is None or self.config is None:
            return False
        target = self.plan.target(step, total_steps, self.config.schedule_final)
        if not target:
            return False
        if self.structured is not None:
            if self.structured.step(model, target, self.data, self.loss_fn) is None:
                return False
            self.events.append({"step": step, **self.structured.reports[-1].summary()})
            self.layers = _prunable_or_empty(model)
            self.masks = masks_from_zeros(self.layers) if self.keep else {}
            return True
        assert self.pruner is not None
        if self.pruner.needs_observations:
            self.pruner.calibrate(
                self.data, self.loss_fn, getattr(self.config, "num_samples", None)
            )
        self.masks = self.pruner.prune_to(target)
        self.events.append({"step": step, "sparsity": target})
        return False

    def after_backward(self) -> None:
        """Let gradient scorers see this step's gradients, then zero the pruned weights'."""
        if self.pruner is not None:
            self.pruner.observe()
        mask_grads_(self.layers, self.masks)

    def after_step(self) -> None:
        """Write the zeros back (weight decay and momentum may have moved them)."""
        apply_masks_(self.layers, self.masks)

    def sparsity(self) -> float | None:
        """Fraction of zeros in the prunable layers' weights (None without such layers)."""
        if not self.layers:
            return None
        zeros = sum(int((m.weight == 0).sum()) for m in self.layers.values())
        return zeros / sum(m.weight.numel() for m in self.layers.values())


def _prunable_or_empty(model: nn.Module) -> dict[str, nn.Module]:
    try:
        return select_layers(model)
    except PrunekitError:
        return {}
