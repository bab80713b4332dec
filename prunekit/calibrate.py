"""Passes over calibration data that collect statistics, leaving the model as it was.

Gradient-based scores need ∂L/∂w on real batches. This pass runs in eval mode (no BatchNorm
statistics updated, no dropout), saves and restores every ``.grad`` and ``requires_grad`` flag,
and never steps an optimizer: afterwards the model is bit-identical to before.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from prunekit.data.batches import run_model, split_batch, take_samples
from prunekit.errors import PrunekitError

LossFn = Callable[[torch.Tensor, Any], torch.Tensor]


def gradient_pass(
    model: nn.Module,
    data: Iterable[Any],
    on_backward: Callable[[], None],
    loss_fn: LossFn,
    num_samples: int | None = None,
) -> int:
    """Forward/backward over ``data`` (up to ``num_samples`` samples), calling ``on_backward``
    after each batch's backward while the gradients are in ``.grad``. Returns batches seen."""
    params = list(model.parameters())
    saved = [(p.grad, p.requires_grad) for p in params]
    was_training = model.training
    model.eval()
    batches = 0
    try:
        for p in params:
            p.requires_grad_(True)
        for batch in take_samples(data, num_samples):
            for p in params:
                p.grad = None
            inputs, labels = split_batch(batch)
            loss = loss_fn(run_model(model, inputs), labels)
            loss.backward()
            on_backward()
            batches += 1
    finally:
        for p, (grad, req) in zip(params, saved, strict=True):
            p.grad = grad
            p.requires_grad_(req)
        model.train(was_training)
    if batches == 0:
        raise PrunekitError("data: got no batches; pass at least one (inputs, labels) batch")
    return batches
