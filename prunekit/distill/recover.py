"""Recovery after one-shot pruning: label-free distillation from the dense model, time-boxed.

``recover_(pruned, dense, text_batches, minutes=10)`` trains the pruned model to reproduce the
dense model on the model's own calibration text; no label is read. Encoders (models whose output
has no ``logits``) match the dense mean-pooled sentence embeddings (1 − cosine), language models
its next-token distributions (KL at temperature 1); both also match every block's hidden states
(MSE), which carries most of the signal when the two models start close (SquareHead, Kurtic et
al. 2023). Weights that are zero stay zero (``finetune_``'s masks), so the sparsity and any N:M
pattern are exactly the one-shot step's.

Mixed precision where the hardware multiplies bfloat16 natively (``precision="auto"``: AMX
CPUs, most GPUs), so a time box holds more steps there (1.67× on a 2-core AMX Xeon:
``python -m bench.precision``), and lines of text are batched with lines of similar length
(``group_by_length``: 2.7× fewer tokens computed on MiniLM's WordNet recovery text). Time-boxed by
:class:`DistillConfig`'s ``minutes``: the run stops when the minutes are spent
(cycling over the batches when they are few) and the learning-rate schedule follows the clock,
so it decays to its end at the deadline however busy the machine is. ``max_steps`` bounds the
steps as well, for a run that does not depend on the machine's speed.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from prunekit.calibrate import calibration_forward
from prunekit.data.batches import group_by_length as group_batches
from prunekit.data.batches import split_batch, trim_padding
from prunekit.distill.api import DistillReport, distill_
from prunekit.distill.config import DistillConfig
from prunekit.errors import PrunekitError
from prunekit.measure._common import evaluating

log = logging.getLogger(__name__)

# A bound on the steps of one run, far beyond what minutes of CPU reach.
_MAX_STEPS = 100_000


@dataclass(kw_only=True)
class RecoverReport(DistillReport):
    """A distillation report (see :class:`DistillReport`) with the time box: ``budget_s`` (the
    minutes given, in seconds) and ``step_s`` (the mean seconds of a step)."""

    method: str = "recover-distill"
    budget_s: float = 0.0
    step_s: float = 0.0


def recovery_config(model: nn.Module, batch: Any, lr: float = 5e-4) -> DistillConfig:
    """The label-free distillation settings for ``model`` (see the module docstring)."""
    inputs, _ = split_batch(batch)
    with torch.no_grad(), evaluating(model):
        out = calibration_forward(model, inputs)
    common: dict[str, Any] = {"alpha": 1.0, "hidden": "auto", "lr": lr, "precision": "auto"}
    if getattr(out, "logits", None) is not None:
        return DistillConfig(output_loss="kl", temperature=1.0, **common)
    return DistillConfig(output_loss="cosine", **common)


def recover_(
    model: nn.Module,
    teacher: nn.Module,
    data: Iterable[Any],
    *,
    minutes: float = 10.0,
    max_steps: int | None = None,
    config: DistillConfig | None = None,
    group_by_length: bool = True,
    progress: bool = True,
) -> RecoverReport:
    """Distill ``teacher`` (the dense model) into the pruned ``model`` in place for at most
    ``minutes``, on ``data``: batches of tokenized text (dicts with ``input_ids``; labels, if
    any, are not used). ``config``: the distillation settings (default
    :func:`recovery_config`); its ``epochs`` and ``minutes`` are replaced by the time box. If
    it raises, the model is as it was.

    max_steps: at most this many optimizer steps (> 0), or None: the minutes alone end the run.
        The time box still applies; within it the run is exactly ``max_steps`` steps, one pass
        over the batches cycled to that length (so the report has one epoch), and the
        learning-rate schedule ends at the last of them, whatever the machine's speed.
    group_by_length: re-batch the lines so each batch holds lines of similar length (same
        samples and batch size; :func:`prunekit.data.batches.group_by_length`): far less padding
        is computed, so the time box holds more steps. False: the batches as given.
    """
    if not minutes > 0:
        raise PrunekitError(f"minutes must be > 0; got {minutes}")
    if max_steps is not None and (
        not isinstance(max_steps, int) or isinstance(max_steps, bool) or max_steps <= 0
    ):
        raise PrunekitError(f"max_steps must be an integer > 0, or None; got {max_steps!r}")
    batches = list(data)
    if group_by_length and batches:
        batches = group_batches(batches, seed=0 if config is None else config.seed)
    batches = [trim_padding(b) for b in batches]
    if not batches:
        raise PrunekitError("data: got no batches; pass the model's calibration text")
    if not isinstance(split_batch(batches[0])[0], dict):
        raise PrunekitError(
            "data: recovery by distillation reads tokenized text batches (dicts with "
            f"input_ids); got {type(split_batch(batches[0])[0]).__name__} batches"
        )
    if config is None:
        config = recovery_config(model, batches[0])
    if max_steps is None:
        # The epochs only bound the run: the minutes end it.
        epochs = max(1, _MAX_STEPS // len(batches))
    else:
        # The loop's steps are epochs × batches: one pass over exactly max_steps batches.
        batches = list(itertools.islice(itertools.cycle(batches), max_steps))
        epochs = 1
    config = DistillConfig(**{**config.model_dump(), "epochs": epochs, "minutes": minutes})
    run = distill_(model, teacher, batches, config, progress=progress)
    return RecoverReport(
        epochs=run.epochs,
        steps=run.steps,
        seconds=run.seconds,
        config=run.config,
        history=run.history,
        pairs=run.pairs,
        projections=run.projections,
        stopped_early=run.stopped_early,
        out_of_time=run.out_of_time,
        budget_s=60.0 * minutes,
        step_s=run.seconds / max(run.steps, 1),
    )
