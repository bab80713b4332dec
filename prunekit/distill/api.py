"""``distill_``: train a student in place to imitate a teacher, on the one fine-tuning loop."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from prunekit.calibrate import LossFn
from prunekit.data.batches import first_batch
from prunekit.distill.config import DistillConfig
from prunekit.distill.step import Distiller
from prunekit.errors import PrunekitError
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
    if not isinstance(config, DistillConfig):
        raise TypeError(f"config must be a DistillConfig; got {type(config).__name__}")
    shared = {id(p) for p in teacher.parameters()} & {id(p) for p in student.parameters()}
    if shared:
        # Freezing the teacher would freeze these in the student too.
        raise PrunekitError(
            f"teacher: shares {len(shared)} parameter tensors with the student; pass a copy "
            f"(copy.deepcopy or prunekit.teacher_copy)"
        )
    distiller = Distiller(teacher, config, loss_fn)
    modes = [(m, m.training) for m in teacher.modules()]
    flags = [(p, p.requires_grad) for p in teacher.parameters()]
    teacher.eval().requires_grad_(False)
    start = time.perf_counter()
    try:
        torch.manual_seed(config.seed)  # the projections' initialisation
        distiller.prepare(student, first_batch(data))
        run = finetune_(
            student,
            data,
            epochs=config.epochs,
            lr=config.lr,
            eval_data=eval_data,
            optimizer=config.optimizer,
            weight_decay=config.weight_decay,
            max_grad_norm=config.max_grad_norm,
            progress=progress,
            seed=config.seed,
            distiller=distiller,
        )
    finally:
        for module, training in modes:
            module.training = training
        for p, requires_grad in flags:
            p.requires_grad_(requires_grad)
    pairs = [f"{s}={t}" for s, t in distiller.pairs]
    projections = [
        f"{pairs[int(i)]}: {p.in_features}→{p.out_features}"
        for i, p in distiller.projections.items()
    ]
    report = DistillReport(
        epochs=run.epochs,
        steps=run.steps,
        seconds=time.perf_counter() - start,
        config=config.to_dict(),
        history=run.history,
        pairs=pairs,
        projections=projections,
        stopped_early=run.stopped_early,
    )
    log.info("distillation done: %s", report.history[-1] if report.history else "no epoch")
    return report
