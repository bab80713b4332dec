"""Trace a model into an ATen graph, with the shape of every value.

Why ``make_fx`` in real mode over ``functional_call`` (see DESIGN.md in this folder): it records
whatever eager PyTorch runs, Python control flow included, so any model that runs on the example
input traces (torch.fx's symbolic tracing and ``torch.export`` reject much of Hugging Face);
parameters and buffers become named graph inputs (tied weights are one input used twice); and
the graph is in a small, documented op set (``aten``) for which coupling rules can be written
once instead of per ``nn.Module`` class.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn
from torch._guards import TracingContext, tracing
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.func import functional_call
from torch.fx.experimental.proxy_tensor import make_fx
from torch.utils import _pytree as pytree

from prunekit.errors import PrunekitError


def output_tensors(out: Any) -> list[torch.Tensor]:
    """Every tensor in a model's output (tuples, dicts, Hugging Face ``ModelOutput``s), in order.

    Other objects (a key/value cache) are skipped: they are not the model's result."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for v in out.values() for t in output_tensors(v)]
    if isinstance(out, list | tuple):
        return [t for v in out for t in output_tensors(v)]
    return []


def split_inputs(example_inputs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """``(args, kwargs)`` for ``model(*args, **kwargs)`` from a tensor, tuple or dict."""
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,), {}
    if isinstance(example_inputs, dict):
        return (), dict(example_inputs)
    if isinstance(example_inputs, list | tuple):
        return tuple(example_inputs), {}
    raise PrunekitError(
        f"example_inputs must be a tensor, a tuple of positional inputs or a dict of keyword "
        f"inputs; got {type(example_inputs).__name__}"
    )


def run_model(model: nn.Module, example_inputs: Any) -> list[torch.Tensor]:
    args, kwargs = split_inputs(example_inputs)
    return output_tensors(model(*args, **kwargs))


@dataclass
class Trace:
    """An ATen graph of one forward pass.

    state: placeholder node → parameter/buffer name (deduplicated: a tied weight appears once).
    values: node → its value on the example input, tensors as fake tensors (shapes only).
    """

    graph: fx.Graph
    state: dict[fx.Node, str]
    inputs: list[fx.Node]
    values: dict[fx.Node, Any]


def trace(model: nn.Module, example_inputs: Any) -> Trace:
    """Trace ``model`` on ``example_inputs`` in eval mode; the model is left as it was."""
    args, kwargs = split_inputs(example_inputs)
    state = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            try:
                returns_tensors = bool(output_tensors(model(*args, **kwargs)))
            except Exception as e:
                raise PrunekitError(
                    f"example_inputs: the model does not run on them ({type(e).__name__}: {e}); "
                    "pass inputs of the shape and dtype the model's forward takes"
                ) from e
            if not returns_tensors:
                raise PrunekitError(
                    "the model returned no tensor on example_inputs; structured pruning needs "
                    "tensor outputs to know which dimensions must be kept"
                )

            def forward(state: dict[str, torch.Tensor], args: Any, kwargs: Any) -> Any:
                return output_tensors(functional_call(model, state, args, kwargs))

            try:
                # Real tensors flow through the trace, so data-dependent Python branches
                # (Hugging Face's mask checks) just take the branch the example input takes.
                with _one_fake_mode():
                    gm = make_fx(forward, tracing_mode="real", _error_on_data_dependent_ops=False)(
                        state, args, kwargs
                    )
            except Exception as e:
                raise PrunekitError(
                    f"the model could not be traced on example_inputs ({type(e).__name__}: {e}); "
                    "structured pruning needs a forward pass that PyTorch can record"
                ) from e
    finally:
        model.train(was_training)

    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    leaves, _ = pytree.tree_flatten((state, args, kwargs))
    assert len(leaves) == len(placeholders), "make_fx placeholder order changed"
    names = list(state)
    state_nodes = {placeholders[i]: names[i] for i in range(len(names))}
    inputs = placeholders[len(names) :]
    # make_fx records each node's value as a fake tensor (shape, dtype and strides, no data):
    # all the rules read. Keeping the real values instead (a second run of the graph) held a
    # language model's activations, most of its weights' size again; the Python scalars that
    # ``.item()`` returns have no record (None: the rules block what produced them).
    values = {n: n.meta.get("val") for n in gm.graph.nodes}
    return Trace(gm.graph, state_nodes, inputs, values)


def _one_fake_mode() -> contextlib.AbstractContextManager[Any]:
    """Have make_fx record every node's shape with one fake-tensor mode.

    Without one in context, make_fx creates a mode per node, and each keeps the Python stack it
    was created in (~100 frames): on a 12-block, 46M-parameter LLaMA (1,100 nodes) that was a
    sixth of its bf16 weights' size and three quarters of the tracing time."""
    return tracing(TracingContext(FakeTensorMode(allow_fallback_kernels=True)))
