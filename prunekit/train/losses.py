"""The task loss a model trains on (distillation's losses are in ``prunekit.distill.losses``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from prunekit.data.batches import run_model
from prunekit.errors import PrunekitError


def task_loss(logits: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    """Cross-entropy. logits: [B, C] or [B, T, C]; labels: [B] or [B, T] (-100 ignored)."""
    if labels is None:
        raise PrunekitError(
            "data: this step needs labels; pass (inputs, labels) batches, dicts with 'labels', "
            "or a loss_fn(outputs, labels)"
        )
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))


def forward_with_loss(
    model: Any, inputs: Any, labels: torch.Tensor | None, loss_fn: Any = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward pass and its loss: ``(logits, loss)``.

    Without a ``loss_fn``, a model that computes its own loss from ``labels`` (Hugging Face
    models: causal LMs shift the labels, masked LMs ignore -100) is asked for it; otherwise the
    loss is ``loss_fn(logits, labels)``, cross-entropy by default.
    """
    if loss_fn is None and isinstance(inputs, Mapping) and labels is not None:
        out = model(**inputs, labels=labels)
        loss = getattr(out, "loss", None)
        logits = getattr(out, "logits", None)
        if isinstance(loss, torch.Tensor) and isinstance(logits, torch.Tensor):
            return logits, loss
        logits = run_model(model, inputs)
        return logits, task_loss(logits, labels)
    logits = run_model(model, inputs)
    return logits, (loss_fn or task_loss)(logits, labels)


class TaskLoss:
    """The objective without a teacher: the task loss alone (see :func:`forward_with_loss`).
    Shares its interface with ``prunekit.distill.Distiller``: ``loss`` gives a step's loss and
    its named parts, ``parameters`` extra trainable tensors, ``evaluate`` per-epoch figures."""

    def __init__(self, loss_fn: Any = None) -> None:
        self.loss_fn = loss_fn

    def loss(
        self, model: Any, inputs: Any, labels: torch.Tensor | None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return forward_with_loss(model, inputs, labels, self.loss_fn)[1], {}

    def parameters(self) -> list[torch.nn.Parameter]:
        return []

    def evaluate(self, model: Any, data: Any) -> dict[str, float]:
        return {}
