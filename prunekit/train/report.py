"""What a fine-tuning (or distillation) run reports."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prunekit.report import Report, Table

_COLUMNS = (("train_loss", "loss"), ("task_loss", "task"), ("soft_loss", "soft"),
            ("hidden_loss", "hidden"), ("eval_accuracy", "eval acc."),
            ("eval_agreement", "agreement"), ("eval_fidelity", "fidelity"),
            ("sparsity", "sparsity"), ("lr", "lr"))  # fmt: skip


@dataclass(kw_only=True)
class FinetuneReport(Report):
    """What a fine-tuning run did: per-epoch loss/accuracy/sparsity, and how it ended.

    history: one entry per epoch: ``train_loss``, ``lr`` (after the epoch's last step), with a
        teacher the loss's parts (``soft_loss``, ``task_loss``, ``hidden_loss``), with
        ``eval_data`` ``eval_accuracy`` (and, with a teacher, ``eval_agreement`` or
        ``eval_fidelity``), and the prunable layers' ``sparsity``.
    prune: with ``prune=``, the pruning method that ran while training: ``{"method": name,
        "config": its JSON dict, "schedule": name}``; None otherwise.
    pruning: the pruning steps of a schedule (``step`` and the sparsity or units reached).
    out_of_time: the config's ``minutes`` ran out before its ``epochs`` (the run is complete:
        its schedule followed the clock).
    config: the resolved :class:`FinetuneConfig`.
    pairs, projections: with a teacher, the matched hidden states
        (``"student_module=teacher_module"``) and the width projections trained and discarded.
    """

    method: str = "finetune"
    epochs: int
    steps: int
    history: list[dict[str, Any]] = field(default_factory=list)
    prune: dict[str, Any] | None = None
    pruning: list[dict[str, Any]] = field(default_factory=list)
    stopped_early: str | None = None
    out_of_time: bool = False
    pairs: list[str] = field(default_factory=list)
    projections: list[str] = field(default_factory=list)

    @property
    def final_accuracy(self) -> float | None:
        return self.history[-1].get("eval_accuracy") if self.history else None

    def title(self) -> str:
        return f"{self.method}: {self.epochs} epochs, {self.steps} steps ({self.seconds:.1f} s)"

    def table(self) -> Table:
        shown = [(k, t) for k, t in _COLUMNS if any(h.get(k) is not None for h in self.history)]
        rows = [[str(h.get("epoch", i + 1)), *(_fmt(h.get(k)) for k, _ in shown)]
                for i, h in enumerate(self.history)]  # fmt: skip
        return ["epoch", *(title for _, title in shown)], rows

    def notes(self) -> list[str]:
        notes = [f"hidden: {', '.join(self.pairs)}"] if self.pairs else []
        notes += [f"projections: {', '.join(self.projections)}"] if self.projections else []
        if self.prune is not None:
            notes.append(
                f"pruned while training: {self.prune['method']} ({self.prune['schedule']})"
            )
        notes += [f"pruning steps: {len(self.pruning)}"] if self.pruning else []
        notes += [f"stopped early: {self.stopped_early}"] if self.stopped_early else []
        return notes + super().notes()


def _fmt(value: Any) -> str:
    return "" if value is None else f"{value:.4g}"
