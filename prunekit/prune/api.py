"""``prune_``: one-shot pruning, the verb users call first."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from torch import nn

from prunekit.calibrate import LossFn
from prunekit.config import PruneConfig
from prunekit.errors import PrunekitError
from prunekit.prune.methods.calibrated import CalibratedConfig
from prunekit.prune.oneshot import prune_calibrated_
from prunekit.prune.pruner import Pruner
from prunekit.prune.report import PruneReport
from prunekit.prune.structured.api import prune_structured_
from prunekit.prune.structured.report import StructuredReport
from prunekit.surgery.transaction import Transaction


def prune_(
    model: Any,
    config: PruneConfig,
    data: Iterable[Any] | None = None,
    *,
    example_inputs: Any = None,
    loss_fn: LossFn | None = None,
    dry_run: bool = False,
) -> PruneReport | StructuredReport:
    """Prune ``model`` in place to ``config``'s sparsity and pattern, in one shot.

    data: batches for methods that need them (``TaylorConfig``): ``(inputs, labels)`` tuples,
        dicts, or tensors with a ``loss_fn``; at most ``config.num_samples`` samples are read.
    example_inputs: for structured patterns (``channel``, ``head``), traced to find the coupled
        groups (default: the first batch of ``data``); unused by unstructured and N:M pruning.
    loss_fn: ``loss_fn(logits, labels) -> scalar``; by default the model's own loss when it
        computes one from ``labels`` (Hugging Face models), else cross-entropy.
    dry_run: score and plan as usual, then put the model back bit for bit: the report (with
        ``applied=False``) says what the call would remove, per layer (the sparsity reached) or
        per group (the units and shapes kept); its figures equal the real call's.

    Returns a :class:`PruneReport` with the sparsity reached per layer, or for structured
    patterns a :class:`StructuredReport` (units per group, parameters and MACs before/after).
    Everything is checked and scored before the first weight changes: if this raises, the
    model is as it was.
    """
    if not isinstance(config, PruneConfig):
        raise TypeError(
            f"config: expected a pruning config such as prunekit.MagnitudeConfig(sparsity=0.5) "
            f"(see prunekit.methods('prune')); got {type(config).__name__}"
        )
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module; got {type(model).__name__}")
    if not dry_run:
        return _prune(model, config, data, example_inputs, loss_fn)
    # Scoring may run the model (BatchNorm statistics, gradients): every value is put back.
    tx = Transaction(model)
    tx.protect_all()
    grads = [(p, p.grad) for p in model.parameters()]
    tx.protect(g for _, g in grads if g is not None)
    try:
        report = _prune(model, config, data, example_inputs, loss_fn, dry_run=True)
    finally:
        tx.rollback()
        tx.close()
        for p, g in grads:
            p.grad = g
    report.applied = False
    return report


def _prune(
    model: nn.Module,
    config: PruneConfig,
    data: Iterable[Any] | None,
    example_inputs: Any,
    loss_fn: LossFn | None,
    dry_run: bool = False,
) -> PruneReport | StructuredReport:
    if config.structured:
        return prune_structured_(
            model, config, data, example_inputs=example_inputs, loss_fn=loss_fn, dry_run=dry_run
        )
    if isinstance(config, CalibratedConfig):
        return prune_calibrated_(model, config, data)
    start = time.perf_counter()
    pruner = Pruner(model, config)
    if config.needs_training:
        raise PrunekitError(
            f"method {pruner.method.name!r} learns its scores while training; use "
            f"prunekit.finetune_(model, data, epochs=..., prune={type(config).__name__}(...), "
            f"schedule='agp')"
        )
    if config.needs_data:
        if data is None:
            raise PrunekitError(
                f"data: method {pruner.method.name!r} needs batches of labelled data to score "
                f"weights; pass data=[(inputs, labels), ...]"
            )
        pruner.calibrate(data, loss_fn, getattr(config, "num_samples", None))
    # The schedule's end: the sparsity, or the whole per-layer table when sparsity is 0.
    pruner.prune_once(config.schedule_final)
    return PruneReport.from_layers(
        pruner.method.name, config.to_dict(), pruner.layers, time.perf_counter() - start
    )
