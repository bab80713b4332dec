"""Top-1 accuracy over labelled batches."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from prunekit.data.batches import run_model, split_batch, take_samples
from prunekit.errors import PrunekitError
from prunekit.measure._common import evaluating, model_device, to_device

# Hugging Face marks positions that carry no label with -100.
IGNORE_INDEX = -100


def top1_accuracy(
    model: nn.Module, data: Iterable[Any], *, num_samples: int | None = None
) -> tuple[float, int] | None:
    """Fraction of labelled positions whose arg-max logit equals the label, and their count.

    ``data``: batches of ``(inputs, labels)`` or dicts with ``"labels"``; logits ``[B, C]``
    against labels ``[B]`` (or ``[B, T, C]`` against ``[B, T]``, ``-100`` ignored). Only the
    first ``num_samples`` samples when given. Returns None when the batches carry no labels.
    The model runs in eval mode without gradients; its modes are restored after.
    """
    device = model_device(model)
    correct = total = 0
    with evaluating(model), torch.inference_mode():
        for batch in take_samples(data, num_samples):
            inputs, labels = split_batch(batch)
            if labels is None:
                return None
            preds = run_model(model, to_device(inputs, device)).argmax(dim=-1)
            labels = labels.to(preds.device)
            if preds.shape != labels.shape:
                raise PrunekitError(
                    f"data: labels of shape {list(labels.shape)} do not match the model's "
                    f"predictions of shape {list(preds.shape)}; pass class indices per sample"
                )
            keep = labels != IGNORE_INDEX
            correct += int((preds[keep] == labels[keep]).sum())
            total += int(keep.sum())
    if total == 0:
        return None
    return correct / total, total
