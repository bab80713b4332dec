"""``distill_``: train a student in place to imitate a teacher: ``finetune_`` with a teacher."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from torch import nn

from prunekit.calibrate import LossFn
from prunekit.distill.config import DistillConfig
from prunekit.train.config import FinetuneConfig
from prunekit.train.loop import finetune_
from prunekit.train.report import FinetuneReport

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class DistillReport(FinetuneReport):
    """What a distillation run did (``method`` ``"kd"``).

    history: one entry per epoch: ``train_loss`` and its parts ``task_loss`` (cross-entropy on
        the labels, when alpha < 1), ``soft_loss`` (the output-matching term), ``hidden_loss``
        (when hidden states are matched); with ``eval_data``, ``eval_accuracy`` (labelled data)
        and ``eval_agreement`` (fraction of predictions equal to the teacher's) or, for
        encoders, ``eval_fidelity`` (mean cosine to the teacher's sentence embeddings).
    pairs: the matched hidden states, ``"student_module=teacher_module"``.
    projections: the width projections trained (and discarded), ``"pair: in→out"``.
    """

    method: str = "kd"


def distill_(
    student: nn.Module,
    teacher: nn.Module,
    data: Iterable[Any],
    config: DistillConfig | None = None,
    *,
    eval_data: Iterable[Any] | None = None,
    loss_fn: LossFn | None = None,
    progress: bool = True,
) -> DistillReport:
    """Train ``student`` in place to imitate ``teacher`` on ``data`` (see :class:`DistillConfig`).

    data: a re-iterable collection of batches with a length: ``(inputs, labels)``, dicts as
        Hugging Face models take, or inputs alone (then ``alpha`` must be 1).
    eval_data: measured after each epoch (accuracy, agreement or embedding fidelity).
    loss_fn: the task loss ``loss_fn(logits, labels)``; cross-entropy (or the Hugging Face
        model's own loss) by default.

    Runs on ``prunekit.finetune_``: pruned weights stay zero, codebook and QAT layers train as
    usual. The teacher runs in eval mode without gradients; its modes and ``requires_grad``
    flags are put back afterwards. Hooks and projections never stay on either model. If it
    raises, the student is as it was.
    """
    config = DistillConfig() if config is None else config
    if not isinstance(config, FinetuneConfig):
        raise TypeError(f"config must be a DistillConfig; got {type(config).__name__}")
    run = finetune_(
        student, data, config, teacher=teacher, eval_data=eval_data, loss_fn=loss_fn,
        progress=progress,
    )  # fmt: skip
    report = DistillReport(
        epochs=run.epochs,
        steps=run.steps,
        seconds=run.seconds,
        config=config.to_dict(),
        history=run.history,
        pairs=run.pairs,
        projections=run.projections,
        stopped_early=run.stopped_early,
        out_of_time=run.out_of_time,
        pruning=run.pruning,
    )
    log.info("distillation done: %s", report.history[-1] if report.history else "no epoch")
    return report
