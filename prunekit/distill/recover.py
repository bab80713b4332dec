"""Recovery after one-shot pruning: label-free distillation from the dense model, time-boxed.

``recover_(pruned, dense, text_batches, minutes=10)`` trains the pruned model to reproduce the
dense model on the model's own calibration text; no label is read. Encoders (models whose output
has no ``logits``) match the dense mean-pooled sentence embeddings (1 − cosine), language models
its next-token distributions (KL at temperature 1); both also match every block's hidden states
(MSE), which carries most of the signal when the two models start close (SquareHead, Kurtic et
al. 2023). Weights that are zero stay zero (``finetune_``'s masks), so the sparsity and any N:M
pattern are exactly the one-shot step's.

Time-boxed: one training step is timed first and the learning-rate schedule spans the steps that
fit in ``minutes`` (cycling over the batches when they are few); should the steps run slower
than timed, the run stops at the deadline rather than overrun it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from prunekit.calibrate import calibration_forward
from prunekit.data.batches import split_batch, trim_padding
from prunekit.distill.api import DistillReport, distill_
from prunekit.distill.config import DistillConfig
from prunekit.errors import PrunekitError
from prunekit.measure._common import evaluating

log = logging.getLogger(__name__)

# The timed step leaves out the optimizer update and the hidden-state loss (and the machine may
# be busy): the plan keeps this margin, and the deadline stops whatever still runs over.
_MARGIN = 1.3


@dataclass(kw_only=True)
class RecoverReport(DistillReport):
    """A distillation report (see :class:`DistillReport`) with the time box: ``budget_s`` (the
    minutes given, in seconds), ``step_s`` (one timed step) and ``planned_steps``."""

    method: str = "recover-distill"
    budget_s: float = 0.0
    step_s: float = 0.0
    planned_steps: int = 0


def recovery_config(model: nn.Module, batch: Any, lr: float = 5e-4) -> DistillConfig:
    """The label-free distillation settings for ``model`` (see the module docstring)."""
    inputs, _ = split_batch(batch)
    with torch.no_grad(), evaluating(model):
        out = calibration_forward(model, inputs)
    if getattr(out, "logits", None) is not None:
        return DistillConfig(alpha=1.0, output_loss="kl", temperature=1.0, hidden="auto", lr=lr)
    return DistillConfig(alpha=1.0, output_loss="cosine", hidden="auto", lr=lr)


def recover_(
    model: nn.Module,
    teacher: nn.Module,
    data: Iterable[Any],
    *,
    minutes: float = 10.0,
    config: DistillConfig | None = None,
    progress: bool = True,
) -> RecoverReport:
    """Distill ``teacher`` (the dense model) into the pruned ``model`` in place for at most
    ``minutes``, on ``data``: batches of tokenized text (dicts with ``input_ids``; labels, if
    any, are not used). ``config``: the distillation settings (default
    :func:`recovery_config`); its ``epochs`` is replaced by the time box. If it raises, the
    model is as it was."""
    if not minutes > 0:
        raise PrunekitError(f"minutes must be > 0; got {minutes}")
    batches = [trim_padding(b) for b in data]
    if not batches:
        raise PrunekitError("data: got no batches; pass the model's calibration text")
    if not isinstance(split_batch(batches[0])[0], dict):
        raise PrunekitError(
            "data: recovery by distillation reads tokenized text batches (dicts with "
            f"input_ids); got {type(split_batch(batches[0])[0]).__name__} batches"
        )
    if config is None:
        config = recovery_config(model, batches[0])
    config = DistillConfig(**{**config.model_dump(), "epochs": 1})
    start = time.perf_counter()
    budget = 60.0 * minutes
    step_s = _time_step(model, teacher, batches)
    left = budget - (time.perf_counter() - start)
    steps = max(1, int(left / (step_s * _MARGIN)))
    plan = [batches[i % len(batches)] for i in range(steps)]
    log.info("recovery: %.2f s per step, %d steps in %.1f min", step_s, steps, minutes)
    # A step that starts before the deadline ends after it: the last one starts a step earlier.
    deadline = start + budget - step_s * _MARGIN
    run = distill_(model, teacher, _Deadline(plan, deadline), config, progress=progress)
    return RecoverReport(
        epochs=run.epochs,
        steps=run.steps,
        seconds=run.seconds,
        config=run.config,
        history=run.history,
        pairs=run.pairs,
        projections=run.projections,
        stopped_early=run.stopped_early,
        budget_s=budget,
        step_s=step_s,
        planned_steps=steps,
    )


def _time_step(model: nn.Module, teacher: nn.Module, batches: list[Any]) -> float:
    """Seconds of one step's forward and backward passes (the second of two: the first warms
    up); no weight changes and the gradients are cleared."""
    was_training = model.training
    model.train()
    try:
        seconds = 0.0
        for batch in (batches * 2)[:2]:
            inputs, _ = split_batch(batch)
            start = time.perf_counter()
            with torch.no_grad(), evaluating(teacher):
                calibration_forward(teacher, inputs)
            out = calibration_forward(model, inputs)
            first = out if isinstance(out, torch.Tensor) else out[0]
            first.float().pow(2).mean().backward()
            seconds = time.perf_counter() - start
        model.zero_grad(set_to_none=True)
    finally:
        model.train(was_training)
    return seconds


class _Deadline:
    """``batches`` (with their length, which sets the schedule) that stop at ``deadline``."""

    def __init__(self, batches: list[Any], deadline: float) -> None:
        self.batches, self.deadline = batches, deadline

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[Any]:
        for batch in self.batches:
            if time.perf_counter() > self.deadline:
                log.warning("recovery: the time box ran out; stopping before the planned steps")
                return
            yield batch
