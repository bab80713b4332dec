"""``accelerate_``: per layer, the fastest kernel measured on the layer's own inputs."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from prunekit.accelerate.choose import (
    Measured,
    Timer,
    choose,
    relative_error,
    time_kernels,
    wall_timer,
)
from prunekit.accelerate.config import AccelerateConfig
from prunekit.accelerate.kernels import CANDIDATES, expand
from prunekit.accelerate.report import AccelerateReport, LayerKernel
from prunekit.data.batches import batch_size
from prunekit.errors import PrunekitError
from prunekit.layout import canonical
from prunekit.measure._common import (
    ExampleInputs,
    call,
    evaluating,
    model_device,
    resize,
    to_device,
)
from prunekit.quantize.select import linear_kinds, tied_weights
from prunekit.surgery.swaps import swap_
from prunekit.surgery.transaction import transaction
from prunekit.targets import select_layers


def accelerate_(
    model: nn.Module,
    example_inputs: ExampleInputs | None = None,
    config: AccelerateConfig | None = None,
    *,
    timer: Timer | None = None,
    **options: Any,
) -> AccelerateReport:
    """Swap each Linear for the fastest kernel measured on the inputs it really gets.

    example_inputs: one batch as the model takes it (a tensor, a tuple of positional tensors or
        a dict of keyword tensors), batch dimension first; it is cut or repeated to each of
        ``config.batch_sizes``. Every selected layer's inputs and dense outputs are recorded on
        it, the candidate kernels (``config.kernels``: dense, CSR sparse, int8 dynamic) run on
        the same inputs, and a kernel replaces the layer only if its outputs stay within
        ``config.rtol`` and it is at least ``config.min_speedup`` times faster at every batch
        size (see :class:`AccelerateConfig`). Timing runs with the threads torch has now.
    config: an :class:`AccelerateConfig`, or its fields as keywords (``kernels=("csr",)``).
    timer: how a kernel is timed (``timer(kernel, call, number)`` → seconds per call); the
        default is the wall clock. Tests pass a fake one.

    The swapped layers keep plain-tensor state (CSR: values and indices) that ``pk.save``
    stores and ``pk.load`` rebuilds. Everything is measured before the first swap; if this
    raises, the model is as it was. Returns an :class:`AccelerateReport`.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module; got {type(model).__name__}")
    config = _config(config, options)
    inputs = _check_inputs(example_inputs)
    batch_sizes = list(config.batch_sizes or [batch_size(_first_batch(inputs))])
    layers = select_layers(model, config.targets, config.ignore, kinds=linear_kinds())
    tied = tied_weights(model)
    skipped = {n: f"its weight is tied to {tied[n]!r}" for n in layers if n in tied}
    layers = {n: m for n, m in layers.items() if n not in tied}
    kernels = expand(config.kernels)
    start = time.perf_counter()
    with transaction(model), torch.no_grad():
        measured, built = _measure(
            model, layers, inputs, batch_sizes, kernels, config, timer or wall_timer
        )
        rows = []
        for name, layer in layers.items():
            if name not in measured:
                skipped[name] = "not called on the example inputs"
                continue
            kernel, reason = choose(measured[name], kernels, config.rtol, config.min_speedup)
            if reason is not None:
                skipped[name] = reason
            else:
                new = built[name][kernel]
                new.train(layer.training)
                kind, _, args_of = CANDIDATES[kernel]
                swap_(model, name, new, kind, args_of(new))
            rows.append(_row(name, layer, kernel, measured[name], reason))
    return AccelerateReport(
        method=config.method,
        config=config.to_dict(),
        seconds=time.perf_counter() - start,
        skipped=skipped,
        layers=rows,
        batch_sizes=batch_sizes,
        threads=torch.get_num_threads(),
    )


def _config(config: AccelerateConfig | None, options: dict[str, Any]) -> AccelerateConfig:
    if config is None:
        return AccelerateConfig(**options)
    if not isinstance(config, AccelerateConfig):
        raise TypeError(f"config: expected an AccelerateConfig; got {type(config).__name__}")
    if options:
        raise PrunekitError(
            f"pass either config or its fields as keywords, not both; got config and "
            f"{sorted(options)}"
        )
    return config


def _check_inputs(example_inputs: Any) -> ExampleInputs:
    if example_inputs is None:
        raise PrunekitError(
            "example_inputs: accelerate_ times each layer on the inputs it really gets; pass one "
            "batch as the model takes it, e.g. example_inputs=(x,)"
        )
    if isinstance(example_inputs, list):
        example_inputs = tuple(example_inputs)
    if not isinstance(example_inputs, torch.Tensor | tuple | Mapping):
        raise PrunekitError(
            f"example_inputs: expected a tensor, a tuple of tensors or a dict of tensors; got "
            f"{type(example_inputs).__name__}"
        )
    tensors = _tensors(example_inputs)
    if not tensors or any(t.dim() == 0 for t in tensors):
        raise PrunekitError(
            "example_inputs: pass at least one tensor, each with the batch dimension first"
        )
    return example_inputs


def _tensors(inputs: ExampleInputs) -> list[torch.Tensor]:
    values = inputs.values() if isinstance(inputs, Mapping) else (
        inputs if isinstance(inputs, tuple) else (inputs,))  # fmt: skip
    return [v for v in values if isinstance(v, torch.Tensor)]


def _first_batch(inputs: ExampleInputs) -> torch.Tensor:
    return _tensors(inputs)[0]


def _measure(
    model: nn.Module,
    layers: dict[str, nn.Module],
    inputs: ExampleInputs,
    batch_sizes: list[int],
    kernels: list[str],
    config: AccelerateConfig,
    timer: Timer,
) -> tuple[dict[str, Measured], dict[str, dict[str, nn.Module]]]:
    """Run the model once per batch size; at each selected layer's first call, time its
    candidates on that call's input. Returns the measurements and the candidate modules built."""
    measured: dict[str, Measured] = {}
    built: dict[str, dict[str, nn.Module]] = {n: {} for n in layers}
    for size in batch_sizes:
        seen: set[str] = set()

        def hook(
            name: str, size: int, seen: set[str], module: nn.Module, args: Any, output: Any
        ) -> None:
            if name in seen:
                return  # a layer called twice per forward is timed on its first call
            seen.add(name)
            m = measured.setdefault(name, Measured())
            _time_layer(module, args, output, size, m, built[name], kernels, config, timer)

        handles = [
            layer.register_forward_hook(functools.partial(hook, name, size, seen))
            for name, layer in layers.items()
        ]
        try:
            batch = to_device(resize(inputs, size), model_device(model))
            with evaluating(model):
                call(model, batch)
        except PrunekitError:
            raise
        except Exception as e:
            raise PrunekitError(
                f"example_inputs: the model failed on them (resized to batch {size}): "
                f"{type(e).__name__}: {e}; pass one batch as the model takes it"
            ) from e
        finally:
            for handle in handles:
                handle.remove()
    return measured, built


def _time_layer(
    layer: nn.Module,
    args: tuple[Any, ...],
    output: Any,
    size: int,
    m: Measured,
    built: dict[str, nn.Module],
    kernels: list[str],
    config: AccelerateConfig,
    timer: Timer,
) -> None:
    if not args or not isinstance(args[0], torch.Tensor) or not isinstance(output, torch.Tensor):
        for kernel in kernels:
            m.failed.setdefault(kernel, "the layer is not called as layer(tensor) -> tensor")
        return
    x = args[0]
    # layer.forward, not layer(x): calling the module would run this hook again.
    calls: dict[str, Callable[[], Any]] = {"dense": functools.partial(layer.forward, x)}
    for kernel in kernels:
        if kernel == "dense" or kernel in m.failed:
            continue
        try:
            if kernel not in built:
                problem = _unsuitable(kernel, layer, config)
                if problem:
                    m.failed[kernel] = problem
                    continue
                built[kernel] = CANDIDATES[kernel][1](layer).eval()
            y = built[kernel](x)
        except Exception as e:  # a kernel that cannot run this layer is reported, not fatal
            m.failed[kernel] = f"failed ({type(e).__name__}: {e})"
            continue
        m.errors[kernel] = max(m.errors.get(kernel, 0.0), relative_error(y, output))
        calls[kernel] = functools.partial(built[kernel].forward, x)
    for kernel, seconds in time_kernels(calls, config.repeats, timer).items():
        m.seconds.setdefault(kernel, {})[size] = seconds


def _unsuitable(kernel: str, layer: nn.Module, config: AccelerateConfig) -> str | None:
    """Why ``kernel`` is not tried on ``layer`` (decided without running it), or None."""
    weight = layer.weight
    if kernel.startswith("csr"):
        sparsity = _sparsity(layer)
        if sparsity < config.min_sparsity:
            return f"sparsity {sparsity:.1%} is below min_sparsity {config.min_sparsity:.0%}"
    if kernel == "int8" and (weight.device.type != "cpu" or weight.dtype != torch.float32):
        return (
            f"fbgemm's int8 kernel takes float32 CPU layers; this one is {weight.dtype} on "
            f"{weight.device}"
        )
    return None


def _sparsity(layer: nn.Module) -> float:
    w = layer.weight
    return 1.0 - int(torch.count_nonzero(w)) / max(1, w.numel())


def _row(name: str, layer: nn.Module, kernel: str, m: Measured, reason: str | None) -> LayerKernel:
    out, k = canonical(layer, layer.weight).shape
    return LayerKernel(
        name=name,
        shape=(int(out), int(k)),
        sparsity=_sparsity(layer),
        kernel=kernel,
        microseconds={k: {b: s * 1e6 for b, s in t.items()} for k, t in m.seconds.items()},
        speedup={} if kernel == "dense" else m.speedups(kernel),
        errors=dict(m.errors),
        reason=reason,
    )
