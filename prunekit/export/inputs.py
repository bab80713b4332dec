"""How a model is called for export: its example inputs, their names and dynamic dimensions,
and the names of its outputs."""

from __future__ import annotations

import inspect
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from prunekit.errors import PrunekitError
from prunekit.measure._common import ExampleInputs, model_device, resize, to_device


@dataclass(frozen=True)
class ModelCall:
    """How the model is called: positional or keyword inputs, and which of them are tensors."""

    inputs: tuple[Any, ...] | dict[str, Any]
    names: list[str]  # of the tensor inputs, in call order
    batch: int
    sequence: int | None  # the token inputs' length, when it is dynamic
    dynamic_batch: bool
    fixed: dict[str, Any]  # keyword arguments fixed in the graph

    @classmethod
    def of(
        cls, model: nn.Module, example_inputs: ExampleInputs, dynamic_batch: bool, sequence: bool
    ) -> ModelCall:
        if isinstance(example_inputs, torch.Tensor):
            example_inputs = (example_inputs,)
        if isinstance(example_inputs, list):
            example_inputs = tuple(example_inputs)
        if isinstance(example_inputs, Mapping):
            inputs: tuple[Any, ...] | dict[str, Any] = dict(example_inputs)
            items = list(inputs.items())
        elif isinstance(example_inputs, tuple):
            inputs = example_inputs
            items = list(zip(_positional_names(model, len(inputs)), inputs, strict=True))
        else:
            raise PrunekitError(
                f"example_inputs: expected a tensor, a tuple of tensors or a dict of tensors; "
                f"got {type(example_inputs).__name__}"
            )
        tensors = {k: v for k, v in items if isinstance(v, torch.Tensor)}
        if not tensors or any(v.dim() == 0 for v in tensors.values()):
            raise PrunekitError(
                "example_inputs: pass at least one tensor, each with the batch dimension first"
            )
        batches = {k: int(v.shape[0]) for k, v in tensors.items()}
        if len(set(batches.values())) > 1:
            raise PrunekitError(
                f"example_inputs: the tensors disagree on the batch size (first dimension): "
                f"{batches}"
            )
        lengths = {int(v.shape[1]) for v in tensors.values() if is_tokens(v)}
        if sequence and len(lengths) != 1:
            raise PrunekitError(
                f"dynamic_sequence: needs integer inputs [batch, sequence, ...] (token ids) of one "
                f"length; got lengths {sorted(lengths)} in {list(tensors)}"
            )
        fixed = {}
        if _is_hf(model) and "use_cache" in _parameters(model) and "use_cache" not in dict(items):
            fixed["use_cache"] = False  # a key/value cache is no output an ONNX caller can use
        inputs = to_device(inputs, model_device(model))
        batch = next(iter(batches.values()))
        length = lengths.pop() if sequence else None
        return cls(inputs, list(tensors), batch, length, dynamic_batch, fixed)

    def checks(self) -> list[tuple[int, int | None]]:
        """(batch size, sequence length) pairs onnxruntime is checked at: the example's, then
        each dynamic dimension changed in turn."""
        checks = [(self.batch, self.sequence)]
        if self.dynamic_batch:
            checks.append((self.batch + 1 if self.batch > 1 else 3, self.sequence))
        if self.sequence is not None:
            checks.append((checks[-1][0], self.sequence - 1 if self.sequence > 2 else 3))
        return checks

    def resized(self, batch: int, sequence: int | None) -> Any:
        """The example inputs cut or repeated to ``batch`` samples and ``sequence`` tokens."""
        inputs = resize(self.inputs, batch) if batch != self.batch else self.inputs
        if sequence is None or sequence == self.sequence:
            return inputs

        def cut(v: Any) -> Any:
            if not (isinstance(v, torch.Tensor) and is_tokens(v)):
                return v
            reps = -(-sequence // v.shape[1])
            return v.repeat(1, reps, *([1] * (v.dim() - 2)))[:, :sequence]

        if isinstance(inputs, Mapping):
            return {k: cut(v) for k, v in inputs.items()}
        return tuple(cut(v) for v in inputs)

    def args_kwargs(self, inputs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
        if isinstance(inputs, Mapping):
            return (), {**inputs, **self.fixed}
        return tuple(inputs), dict(self.fixed)

    def outputs(self, model: nn.Module, inputs: Any) -> Any:
        args, kwargs = self.args_kwargs(inputs)
        with torch.inference_mode():
            return model(*args, **kwargs)

    def feed(self, inputs: Any) -> dict[str, np.ndarray]:
        values = inputs.values() if isinstance(inputs, Mapping) else inputs
        tensors = [v.detach().cpu().numpy() for v in values if isinstance(v, torch.Tensor)]
        return dict(zip(self.names, tensors, strict=True))

    def dynamic_shapes(self) -> tuple[Any, ...] | dict[str, Any] | None:
        if not self.dynamic_batch and self.sequence is None:
            return None
        batch, sequence = torch.export.Dim("batch", min=1), torch.export.Dim("sequence", min=1)

        def shape(v: Any) -> dict[int, Any] | None:
            if not isinstance(v, torch.Tensor):
                return None
            dims = {0: batch} if self.dynamic_batch else {}
            if self.sequence is not None and is_tokens(v):
                dims[1] = sequence
            return dims or None

        if isinstance(self.inputs, Mapping):
            return {k: shape(v) for k, v in {**self.inputs, **self.fixed}.items()}
        return tuple(shape(v) for v in self.inputs)


def is_tokens(t: torch.Tensor) -> bool:
    """Whether ``t`` looks like token ids or a mask: integer or bool, [batch, sequence, ...]."""
    return t.dim() >= 2 and not (t.is_floating_point() or t.is_complex())


def _positional_names(model: nn.Module, n: int) -> list[str]:
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    names = [p.name for p in _parameters(model).values() if p.kind in kinds]
    return names[:n] if len(names) >= n else [f"input_{i}" for i in range(n)]


def _parameters(model: nn.Module) -> Mapping[str, inspect.Parameter]:
    try:
        return inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return {}


def _is_hf(model: nn.Module) -> bool:
    from prunekit.models.hf import is_hf_model

    return is_hf_model(model)


def output_names(outputs: Any) -> list[str]:
    """One name per output tensor, in the exporter's (pytree) order: dict and ModelOutput keys,
    tuple positions (``output_0``), ``output`` for a single tensor."""
    found: list[str] = []

    def walk(value: Any, where: tuple[str, ...]) -> None:
        if isinstance(value, torch.Tensor):
            name = "_".join(where) or "output"
            found.append(name if re.match(r"[A-Za-z_]", name) else f"output_{name}")
        elif isinstance(value, Mapping):
            for k, v in value.items():
                walk(v, (*where, str(k)))
        elif isinstance(value, (tuple, list)):
            for i, v in enumerate(value):
                walk(v, (*where, str(i)))
        elif value is not None:
            raise PrunekitError(
                f"model output: {'/'.join(where) or 'the output'} is {type(value).__name__} "
                f"{value!r:.40}; an ONNX graph returns tensors only, so return tensors (or None)"
            )

    walk(outputs, ())
    if not found:
        raise PrunekitError(f"model output: holds no tensor; got {type(outputs).__name__}")
    return found


def flat_tensors(outputs: Any) -> list[torch.Tensor]:
    """The output tensors in the order ``output_names`` names them."""
    if isinstance(outputs, torch.Tensor):
        return [outputs]
    values = outputs.values() if isinstance(outputs, Mapping) else outputs
    if isinstance(outputs, (Mapping, tuple, list)):
        return [t for v in values for t in flat_tensors(v)]
    return []


def one_line(err: BaseException) -> str:
    """An exception's message on one line, cut to 300 characters."""
    return " ".join(str(err).split())[:300]
