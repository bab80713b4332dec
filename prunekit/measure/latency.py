"""Wall-clock latency, several models timed in one interleaved run.

On a shared, noisy machine two models timed one after the other can see different loads, so
their ratio says more about the neighbours than about the models. Timing them in alternating
blocks (A, B, A, B, ...) exposes both to the same conditions; each one's median is reported.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from prunekit.errors import PrunekitError
from prunekit.measure._common import (
    ExampleInputs,
    call,
    evaluating,
    model_device,
    resize,
    to_device,
)

MIN_ROUNDS = 5
# Each timed block runs long enough that timer resolution and loop overhead do not matter.
BLOCK_SECONDS = 0.01


@dataclass(frozen=True)
class Latency:
    """Median milliseconds per forward pass of one model, by batch size.

    ``median_ms``: batch size -> median over ``rounds[batch size]`` timed blocks of the mean
    time of one call within a block. ``threads``: ``torch.get_num_threads()`` during the run.
    """

    median_ms: dict[int, float]
    rounds: dict[int, int]
    threads: int
    device: str
    method: str


def time_models(
    models: Sequence[nn.Module],
    inputs: ExampleInputs,
    *,
    batch_sizes: Sequence[int] = (1, 64),
    min_run_time: float = 0.5,
    warmup: int = 3,
) -> list[Latency]:
    """Time every model in ``models`` on ``inputs`` resized to each batch size, interleaved.

    ``inputs``: one batch (tensor, tuple or dict) whose first dimension is the batch; it is cut
    or repeated to each size in ``batch_sizes``. Each model runs ``warmup`` untimed calls, then
    blocks of calls alternate between the models until every model was timed for at least
    ``min_run_time`` seconds and ``MIN_ROUNDS`` blocks per batch size. Runs in eval mode under
    ``torch.inference_mode()``; every model's modes are restored. Returns one ``Latency`` per
    model, in order.
    """
    if not models:
        raise PrunekitError("models: pass at least one model to time")
    if not batch_sizes or any(not isinstance(b, int) or b < 1 for b in batch_sizes):
        raise PrunekitError(f"batch_sizes: expected positive integers; got {batch_sizes!r}")
    if min_run_time <= 0:
        raise PrunekitError(f"min_run_time: must be > 0 seconds; got {min_run_time}")
    medians: list[dict[int, float]] = [{} for _ in models]
    rounds: dict[int, int] = {}
    for size in batch_sizes:
        batches = [to_device(resize(inputs, size), model_device(m)) for m in models]
        per_model = _interleaved(models, batches, min_run_time, warmup)
        for i, samples in enumerate(per_model):
            medians[i][size] = 1000.0 * statistics.median(samples)
        rounds[size] = len(per_model[0])
    threads = torch.get_num_threads()
    together = f"{len(models)} models interleaved, " if len(models) > 1 else ""
    method = (
        f"median of >= {MIN_ROUNDS} timed blocks per batch size after {warmup} warm-up calls, "
        f"{together}eval mode, torch.inference_mode(), channels_last for conv nets, "
        f"{threads} threads"
    )
    return [
        Latency(m, dict(rounds), threads, str(model_device(model)), method)
        for m, model in zip(medians, models, strict=True)
    ]


def _interleaved(
    models: Sequence[nn.Module], batches: list[Any], min_run_time: float, warmup: int
) -> list[list[float]]:
    """Seconds per call, one sample per timed block, for each model."""
    samples: list[list[float]] = [[] for _ in models]
    with ExitStack() as stack:
        for model in models:
            stack.enter_context(evaluating(model))
        # The layout change happens outside inference_mode: weights converted inside it would
        # come back as inference tensors, and the user's model could no longer be trained.
        if any(_channels_last(m, b) for m, b in zip(models, batches, strict=True)):
            for model in models:
                stack.enter_context(_as_channels_last(model))
            batches = [_to_channels_last(b) for b in batches]
        stack.enter_context(torch.inference_mode())
        runs = [_runner(m, b) for m, b in zip(models, batches, strict=True)]
        for run in runs:
            for _ in range(warmup):
                run()
        calls = [_calls_per_block(run) for run in runs]
        spent = [0.0] * len(models)
        while min(spent) < min_run_time or len(samples[0]) < MIN_ROUNDS:
            for i, run in enumerate(runs):
                start = time.perf_counter()
                for _ in range(calls[i]):
                    run()
                elapsed = time.perf_counter() - start
                spent[i] += elapsed
                samples[i].append(elapsed / calls[i])
    return samples


def _channels_last(model: nn.Module, batch: Any) -> bool:
    """Conv nets run in channels_last on CPU, as deployed: oneDNN's convolutions are faster in
    it (1.4× on the VGG-BN here); both models of a comparison get the same layout."""
    return (
        model_device(model).type == "cpu"
        and isinstance(batch, torch.Tensor)
        and batch.dim() == 4
        and any(isinstance(m, nn.Conv2d) for m in model.modules())
    )


@contextmanager
def _as_channels_last(model: nn.Module) -> Iterator[None]:
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    was = conv is not None and conv.weight.is_contiguous(memory_format=torch.channels_last)
    model.to(memory_format=torch.channels_last)
    try:
        yield
    finally:
        if not was:
            model.to(memory_format=torch.contiguous_format)


def _to_channels_last(batch: Any) -> Any:
    if isinstance(batch, torch.Tensor) and batch.dim() == 4:
        return batch.contiguous(memory_format=torch.channels_last)
    return batch


def _calls_per_block(run: Callable[[], None]) -> int:
    start = time.perf_counter()
    run()
    once = max(time.perf_counter() - start, 1e-7)
    return max(1, int(BLOCK_SECONDS / once))


def _runner(model: nn.Module, batch: Any) -> Callable[[], None]:
    device = model_device(model)
    if device.type != "cuda":
        return lambda: call(model, batch)

    def run() -> None:
        call(model, batch)
        # CUDA calls return before the work is done; wait so the clock measures the work.
        torch.cuda.synchronize(device)

    return run
