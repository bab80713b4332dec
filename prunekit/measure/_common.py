"""Helpers shared by the measurements: eval mode that is undone, inputs on the model's device."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from prunekit.data.batches import slice_inputs
from prunekit.errors import PrunekitError

# What example_inputs may be: one tensor, a tuple of positional tensors, or keyword tensors.
ExampleInputs = torch.Tensor | tuple[Any, ...] | Mapping[str, Any]


@contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode; restore every submodule's own training flag afterwards."""
    # Per-module flags, not model.train(old): a model in training may hold frozen (eval) parts.
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in flags:
            module.training = training


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer; CPU for a model with none."""
    for t in [*model.parameters(), *model.buffers()]:
        return t.device
    return torch.device("cpu")


def resize(inputs: ExampleInputs, n: int) -> ExampleInputs:
    """The first ``n`` samples of every tensor in ``inputs``, repeated when there are fewer."""
    if isinstance(inputs, (torch.Tensor, Mapping)):
        return slice_inputs(inputs, n)
    if isinstance(inputs, (tuple, list)):
        return tuple(slice_inputs(v, n) if isinstance(v, torch.Tensor) else v for v in inputs)
    raise PrunekitError(
        f"example_inputs: expected a tensor, a tuple of tensors or a dict of tensors; "
        f"got {type(inputs).__name__}"
    )


def to_device(inputs: ExampleInputs, device: torch.device) -> ExampleInputs:
    """``inputs`` with every tensor moved to ``device``."""
    if isinstance(inputs, torch.Tensor):
        return inputs.to(device)
    if isinstance(inputs, Mapping):
        return {k: to_device(v, device) for k, v in inputs.items()}
    if isinstance(inputs, (tuple, list)):
        return tuple(to_device(v, device) for v in inputs)
    return inputs


def call(model: nn.Module, inputs: ExampleInputs) -> Any:
    """Run ``model`` on ``inputs``: keywords for a dict, positional otherwise."""
    if isinstance(inputs, Mapping):
        return model(**inputs)
    if isinstance(inputs, tuple):
        return model(*inputs)
    return model(inputs)
