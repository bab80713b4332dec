"""``distill_``: train a student in place to imitate a teacher: ``finetune_`` with a teacher."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from prunekit.calibrate import LossFn
from prunekit.distill.config import DistillConfig
from prunekit.train.config import FinetuneConfig
from prunekit.train.loop import finetune_

log = logging.getLogger(__name__)

_COLUMNS = (("train_loss", "loss"), ("task_loss", "task"), ("soft_loss", "soft"),
            ("hidden_loss", "hidden"), ("eval_accuracy", "eval acc."),
            ("eval_agreement", "agreement"), ("eval_fidelity", "fidelity"))  # fmt: skip


@dataclass
class DistillReport:
    """What a distillation run did.

    history: one entry per epoch: ``train_loss`` and its parts ``task_loss`` (cross-entropy on
        the labels, when alpha < 1), ``soft_loss`` (the output-matching term), ``hidden_loss``
        (when hidden states are matched); with ``eval_data``, ``eval_accuracy`` (labelled data)
        and ``eval_agreement`` (fraction of predictions equal to the teacher's) or, for
        encoders, ``eval_fidelity`` (mean cosine to the teacher's sentence embeddings).
    pairs: the matched hidden states, ``"student_module=teacher_module"``.
    projections: the width projections trained (and discarded), ``"pair: in→out"``.
    """

    epochs: int
    steps: int
    seconds: float
    config: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    pairs: list[str] = field(default_factory=list)
    projections: list[str] = field(default_factory=list)
    stopped_early: str | None = None

    @property
    def final_accuracy(self) -> float | None:
        return self.history[-1].get("eval_accuracy") if self.history else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": "kd",
            "config": self.config,
            "epochs": self.epochs,
            "steps": self.steps,
            "seconds": self.seconds,
            "history": self.history,
            "pairs": self.pairs,
            "projections": self.projections,
            "stopped_early": self.stopped_early,
        }

    def __str__(self) -> str:
        from prunekit.measure.render import render_table

        shown = [(k, t) for k, t in _COLUMNS if any(h.get(k) is not None for h in self.history)]
        rows = [[str(h["epoch"]), *(_fmt(h.get(k)) for k, _ in shown)] for h in self.history]
        notes = [f"hidden: {', '.join(self.pairs)}"] if self.pairs else []
        notes += [f"projections: {', '.join(self.projections)}"] if self.projections else []
        notes += [f"stopped early: {self.stopped_early}"] if self.stopped_early else []
        return render_table(
            f"kd: {self.epochs} epochs, {self.steps} steps ({self.seconds:.1f} s)",
            ["epoch", *(title for _, title in shown)],
            rows,
            caption="; ".join(notes) or None,
        )


def _fmt(value: Any) -> str:
    return "" if value is None else f"{value:.4f}"


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
    )
    log.info("distillation done: %s", report.history[-1] if report.history else "no epoch")
    return report
