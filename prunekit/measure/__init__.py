"""Honest measurement: exact counts, bytes on disk, MACs, interleaved latency, accuracy.

``measure(model, data)`` returns a ``Measurement``; ``compare(before, after, data)`` a
``Comparison`` whose latencies come from one interleaved run, so its ratios are side by side.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn

from prunekit.data.batches import first_batch, split_batch
from prunekit.errors import PrunekitError
from prunekit.measure._common import ExampleInputs, resize
from prunekit.measure.accuracy import top1_accuracy
from prunekit.measure.counting import (
    count_nonzeros,
    count_params,
    dense_bytes,
    per_layer_sparsity,
    prunable_sparsity,
)
from prunekit.measure.disk import ArtifactSize, artifact_breakdown, measure_artifact
from prunekit.measure.latency import Latency, time_models
from prunekit.measure.macs import MacCount, count_macs
from prunekit.measure.report import Comparison, Measurement
from prunekit.measure.retrieval import (
    RetrievalScore,
    RetrievalTask,
    retrieval_scores,
    wordnet_retrieval,
)
from prunekit.measure.text import embed, embedding_fidelity, perplexity

Metrics = Callable[[nn.Module], dict[str, float]]
"""Task metrics of one model, e.g. ``lambda m: {"perplexity (…settings…)": perplexity(m, d)}``."""


__all__ = [
    "ArtifactSize",
    "Comparison",
    "Latency",
    "MacCount",
    "Measurement",
    "RetrievalScore",
    "RetrievalTask",
    "artifact_breakdown",
    "compare",
    "count_macs",
    "count_nonzeros",
    "count_params",
    "embed",
    "embedding_fidelity",
    "measure",
    "per_layer_sparsity",
    "perplexity",
    "retrieval_scores",
    "time_models",
    "top1_accuracy",
    "wordnet_retrieval",
]


def measure(
    model: nn.Module,
    data: Iterable[Any] | None = None,
    *,
    example_inputs: ExampleInputs | None = None,
    latency: bool = True,
    batch_sizes: Sequence[int] = (1, 64),
    artifact: bool = True,
    min_run_time: float = 0.5,
    num_samples: int | None = None,
    accuracy: bool = True,
    metrics: Metrics | None = None,
) -> Measurement:
    """Measure ``model`` without changing it (modes restored, no hooks left, weights untouched).

    ``data``: re-iterable batches (see ``prunekit.data.batches``); accuracy is measured when they
    carry labels, over the first ``num_samples`` samples if given. MACs and latency run on
    ``example_inputs`` (a tensor, a tuple of positional tensors or a dict of keyword tensors)
    or else on the first batch of ``data``, cut or repeated to batch 1 for MACs and to each of
    ``batch_sizes`` for latency (each timed for ``min_run_time`` seconds). ``artifact``: also
    save the model to a temporary directory to count its bytes on disk, per tensor and per kind
    of storage (see ``prunekit.measure.disk``). ``accuracy=False``
    skips top-1 accuracy (e.g. for language-model windows whose labels are the inputs);
    ``metrics(model)`` adds task metrics, each name stating its evaluation settings.
    """
    inputs = _inputs(data, example_inputs)
    result = _static(
        model,
        data,
        inputs,
        artifact=artifact,
        num_samples=num_samples,
        accuracy=accuracy,
        metrics=metrics,
    )
    if latency and inputs is not None:
        (timed,) = time_models([model], inputs, batch_sizes=batch_sizes, min_run_time=min_run_time)
        result = _with_latency(result, timed)
    return result


def compare(
    before: nn.Module,
    after: nn.Module,
    data: Iterable[Any] | None = None,
    *,
    example_inputs: ExampleInputs | None = None,
    latency: bool = True,
    batch_sizes: Sequence[int] = (1, 64),
    artifact: bool = True,
    min_run_time: float = 0.5,
    num_samples: int | None = None,
    accuracy: bool = True,
    metrics: Metrics | None = None,
) -> Comparison:
    """Measure ``before`` and ``after`` on the same inputs; see ``measure`` for the arguments.

    Their latencies come from one run that alternates between the two models, so both see the
    same machine load and the after/before ratios are side by side.
    """
    inputs = _inputs(data, example_inputs)
    kwargs = {
        "artifact": artifact,
        "num_samples": num_samples,
        "accuracy": accuracy,
        "metrics": metrics,
    }
    results = [_static(m, data, inputs, **kwargs) for m in (before, after)]
    if latency and inputs is not None:
        timed = time_models(
            [before, after], inputs, batch_sizes=batch_sizes, min_run_time=min_run_time
        )
        results = [_with_latency(r, t) for r, t in zip(results, timed, strict=True)]
    return Comparison(*results)


def _inputs(data: Iterable[Any] | None, example_inputs: ExampleInputs | None) -> Any:
    if data is not None and iter(data) is data:
        raise PrunekitError(
            f"data: got a one-shot iterator ({type(data).__name__}); measuring reads it more "
            f"than once, so pass a list of batches or a DataLoader"
        )
    if example_inputs is not None:
        return example_inputs
    if data is None:
        return None
    return split_batch(first_batch(data))[0]


def _static(
    model: nn.Module,
    data: Iterable[Any] | None,
    inputs: Any,
    *,
    artifact: bool,
    num_samples: int | None,
    accuracy: bool = True,
    metrics: Metrics | None = None,
) -> Measurement:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module; got {type(model).__name__}")
    params, nonzeros = count_params(model), count_nonzeros(model)
    result = Measurement(
        params=params,
        nonzeros=nonzeros,
        sparsity=1 - nonzeros / params if params else 0.0,
        prunable_sparsity=prunable_sparsity(model),
        dense_bytes=dense_bytes(model),
        per_layer_sparsity=per_layer_sparsity(model),
        threads=torch.get_num_threads(),
    )
    if inputs is not None:
        macs = count_macs(model, resize(inputs, 1))
        result.macs, result.effective_macs = macs.dense, macs.effective
    if metrics is not None:
        result.metrics = {name: float(v) for name, v in metrics(model).items()}
    if data is not None and accuracy:
        acc = top1_accuracy(model, data, num_samples=num_samples)
        if acc is not None:
            result.accuracy, result.accuracy_samples = acc
    if artifact:
        size = measure_artifact(model)
        result.artifact_bytes, result.bits_per_nonzero = size.bytes, size.bits_per_nonzero
        result.artifact_kinds, result.artifact_tensors = size.kinds, size.tensors
    return result


def _with_latency(result: Measurement, timed: Latency) -> Measurement:
    return dataclasses.replace(
        result, latency_ms=timed.median_ms, threads=timed.threads, latency_method=timed.method
    )
