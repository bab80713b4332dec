"""What a fine-tuning run reports."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class FinetuneReport:
    """What a fine-tuning run did: per-epoch loss/accuracy/sparsity, and how it ended.

    history: one entry per epoch: ``train_loss``, ``lr`` (after the epoch's last step), with a
        teacher the loss's parts (``soft_loss``, ``task_loss``, ``hidden_loss``), with
        ``eval_data`` ``eval_accuracy`` (and, with a teacher, ``eval_agreement`` or
        ``eval_fidelity``), and the prunable layers' ``sparsity``.
    pruning: the pruning steps of a schedule (``step`` and the sparsity or units reached).
    config: the resolved :class:`FinetuneConfig`.
    pairs, projections: with a teacher, the matched hidden states
        (``"student_module=teacher_module"``) and the width projections trained and discarded.
    """

    epochs: int
    steps: int
    seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)
    pruning: list[dict[str, Any]] = field(default_factory=list)
    stopped_early: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    pairs: list[str] = field(default_factory=list)
    projections: list[str] = field(default_factory=list)

    @property
    def final_accuracy(self) -> float | None:
        return self.history[-1].get("eval_accuracy") if self.history else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "epochs": self.epochs,
            "steps": self.steps,
            "seconds": self.seconds,
            "history": self.history,
            "pruning": self.pruning,
            "stopped_early": self.stopped_early,
            "pairs": self.pairs,
            "projections": self.projections,
        }
