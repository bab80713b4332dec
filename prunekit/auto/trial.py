"""One trial: compress a copy of the dense model as a :class:`Choice` says, then measure it.

The pipeline is the recipe the search writes out: magnitude pruning to the per-layer sparsity,
fine-tuning with the dense model teaching (KD), then k-means sharing (its shared values
fine-tuned when the job says how) or int8-dynamic quantization.
A job carries everything it needs, so it runs the same in-process or on a Ray worker.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from prunekit.artifact.io import artifact_size
from prunekit.auto.space import Choice
from prunekit.data.batches import first_batch, split_batch
from prunekit.measure.accuracy import top1_accuracy
from prunekit.measure.counting import count_nonzeros, count_params
from prunekit.measure.latency import time_models
from prunekit.prune import MagnitudeConfig, prune_
from prunekit.quantize import Int8DynamicConfig, quantize_
from prunekit.share import KMeansConfig, share_weights_
from prunekit.train import FinetuneConfig, finetune_, teacher_copy


@dataclass
class Job:
    """What one trial needs: the dense model, the choice, data and how to train (``share``:
    the training of the shared values after k-means; None: none)."""

    dense: nn.Module
    choice: Choice
    train: Any
    val: Any
    finetune: FinetuneConfig
    share: FinetuneConfig | None = None
    latency_batch: int | None = None
    order: torch.Tensor | None = None


@dataclass
class Outcome:
    """What a trial measured: validation accuracy, artifact bytes, latency if asked, counts."""

    accuracy: float
    bytes: int
    latency_ms: float | None
    params: int
    nonzeros: int
    seconds: float


def prune_config(choice: Choice, seed: int) -> MagnitudeConfig:
    """Magnitude pruning to each layer's own sparsity; layers not listed keep every weight."""
    return MagnitudeConfig(sparsity=0.0, layer_sparsity=choice.layer_sparsity, seed=seed)


def shuffle_state(data: Any) -> torch.Tensor | None:
    """The state of a DataLoader's shuffling generator (None for data without one)."""
    generator = getattr(data, "generator", None)
    return generator.get_state() if generator is not None else None


def restore_shuffle(data: Any, state: torch.Tensor | None) -> None:
    """Put back a state from :func:`shuffle_state`: every trial then sees the same batches."""
    if state is not None:
        data.generator.set_state(state)


def compress(
    dense: nn.Module,
    choice: Choice,
    train: Any,
    finetune: FinetuneConfig,
    share: FinetuneConfig | None = None,
    order: torch.Tensor | None = None,
) -> nn.Module:
    """A compressed copy of ``dense`` (which is left as it was), trained as ``finetune`` says
    with the dense model teaching (and its shared values as ``share`` says); ``order``: the
    training loader's shuffle state to start from (see :func:`shuffle_state`)."""
    restore_shuffle(train, order)
    seed = finetune.seed
    model = copy.deepcopy(dense)
    teacher = teacher_copy(dense)
    prune_(model, prune_config(choice, seed))
    finetune_(model, train, finetune, teacher=teacher, progress=False)
    if choice.quant == "kmeans":
        share_weights_(model, KMeansConfig(bits=choice.bits, conv_bits=choice.conv_bits, seed=seed))
        if share is not None:
            finetune_(model, train, share, teacher=teacher, progress=False)
    elif choice.quant == "int8-dynamic":
        quantize_(model, Int8DynamicConfig(seed=seed))
    return model.eval()


def measure_model(
    model: nn.Module, val: Any, latency_batch: int | None
) -> tuple[float, int, float | None]:
    """(validation accuracy, artifact bytes, median ms per forward at ``latency_batch``)."""
    accuracy = top1_accuracy(model, val)[0]
    latency = None
    if latency_batch is not None:
        inputs, _ = split_batch(first_batch(val))
        (timed,) = time_models([model], inputs, batch_sizes=(latency_batch,), min_run_time=0.3)
        latency = timed.median_ms[latency_batch]
    return accuracy, artifact_size(model), latency


def run_trial(job: Job) -> Outcome:
    """Compress per ``job.choice``, then measure on ``job.val``. Deterministic given the seed."""
    start = time.perf_counter()
    torch.manual_seed(job.finetune.seed)
    model = compress(job.dense, job.choice, job.train, job.finetune, job.share, job.order)
    accuracy, size, latency = measure_model(model, job.val, job.latency_batch)
    return Outcome(
        accuracy, size, latency, count_params(model), count_nonzeros(model),
        time.perf_counter() - start,
    )  # fmt: skip
