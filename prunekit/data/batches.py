"""One way to read the batches users hand us.

`data` anywhere in prunekit is an iterable of batches, each one of:
  - a tensor of inputs (no labels),
  - a tuple/list ``(inputs, labels)`` (extra items are ignored),
  - a dict of keyword inputs, as Hugging Face models take (labels under ``"labels"``).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch
from torch import nn

from prunekit.errors import PrunekitError

Inputs = torch.Tensor | Mapping[str, Any]


def split_batch(batch: Any) -> tuple[Inputs, torch.Tensor | None]:
    """Return ``(inputs, labels)``; labels is None when the batch carries none."""
    if isinstance(batch, torch.Tensor):
        return batch, None
    if isinstance(batch, Mapping):
        labels = batch.get("labels")
        return {k: v for k, v in batch.items() if k != "labels"}, labels
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], (torch.Tensor, Mapping)):
        labels = batch[1] if len(batch) > 1 and isinstance(batch[1], torch.Tensor) else None
        return batch[0], labels
    raise PrunekitError(
        f"data: a batch must be a tensor, an (inputs, labels) tuple or a dict of tensors; "
        f"got {type(batch).__name__}"
    )


def run_model(model: nn.Module, inputs: Inputs) -> torch.Tensor:
    """Call ``model`` on one batch's inputs and return its logits/output tensor."""
    out = model(**inputs) if isinstance(inputs, Mapping) else model(inputs)
    if isinstance(out, torch.Tensor):
        return out
    logits = getattr(out, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    if isinstance(out, Mapping) and isinstance(out.get("logits"), torch.Tensor):
        return out["logits"]
    raise PrunekitError(
        f"model output: expected a tensor or an object with .logits; got {type(out).__name__}"
    )


def batch_size(inputs: Inputs) -> int:
    """Number of samples in one batch's inputs (the first dimension)."""
    if isinstance(inputs, Mapping):
        first = next(v for v in inputs.values() if isinstance(v, torch.Tensor))
        return int(first.shape[0])
    return int(inputs.shape[0])


def slice_inputs(inputs: Inputs, n: int) -> Inputs:
    """The first ``n`` samples of a batch's inputs, repeated when the batch holds fewer."""

    def cut(t: torch.Tensor) -> torch.Tensor:
        if t.shape[0] < n:
            reps = -(-n // t.shape[0])
            t = t.repeat(reps, *([1] * (t.dim() - 1)))
        return t[:n]

    if isinstance(inputs, Mapping):
        return {k: cut(v) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
    return cut(inputs)


def take_samples(data: Iterable[Any], num_samples: int | None) -> Iterator[Any]:
    """Yield batches from ``data`` until ``num_samples`` samples were given (all if None)."""
    if num_samples is None:
        yield from data
        return
    seen = 0
    for batch in data:
        if seen >= num_samples:
            return
        yield batch
        seen += batch_size(split_batch(batch)[0])


def first_batch(data: Iterable[Any], what: str = "data") -> Any:
    """The first batch of ``data``; a clear error when it is empty."""
    try:
        return next(iter(itertools.islice(data, 1)))
    except StopIteration:
        raise PrunekitError(f"{what}: got an empty iterable; pass at least one batch") from None


def trim_padding(batch: Any) -> Any:
    """A dict batch without its trailing columns that are padding in every row: lines padded to
    ``seq_len`` are mostly padding, which calibration leaves out of the statistics anyway, but
    still computed (5× the work on MiniLM's WordNet glosses). The real tokens' outputs are
    unchanged: padding is masked out of attention and comes after them. Other batches are
    returned as they are."""
    mask = batch.get("attention_mask") if isinstance(batch, Mapping) else None
    if not isinstance(mask, torch.Tensor) or mask.dim() != 2 or mask.bool().all():
        return batch
    mask = mask.bool()
    real = mask.any(dim=0).nonzero()
    if len(real) == 0:
        return batch
    end = int(real.max()) + 1
    shape = tuple(mask.shape)
    return {
        k: v[:, :end] if isinstance(v, torch.Tensor) and tuple(v.shape[:2]) == shape else v
        for k, v in batch.items()
    }


def group_by_length(batches: list[Any], seed: int = 0, window: int = 64) -> list[Any]:
    """The samples of ``batches`` re-batched so that each batch holds lines of similar length,
    then :func:`trim_padding`-ed: the same samples and batch size, far less padding computed.

    Text lines padded to one ``seq_len`` vary a lot in length (a WordNet gloss, a list of words):
    a random batch is as long as its longest line, so most of a step's tokens are padding.
    Grouping as Hugging Face's ``group_by_length`` does — samples shuffled under ``seed``, cut
    into windows of ``window`` batches, each window sorted by length and cut into batches, the
    batches shuffled — keeps the batches random while they cost what their lines need (for
    label-free recovery, where a batch's make-up does not matter). Batches that are not dicts
    of ``[B, T]`` tensors with an ``attention_mask`` of one common ``T`` (labels ``[B]`` are
    allowed) are returned unchanged.
    """
    first = batches[0] if batches else None
    if not isinstance(first, Mapping) or not isinstance(first.get("attention_mask"), torch.Tensor):
        return batches
    keys, width = list(first), first["attention_mask"].shape[-1]
    size = first["attention_mask"].shape[0]
    columns: dict[str, list[torch.Tensor]] = {k: [] for k in keys}
    for batch in batches:
        if not isinstance(batch, Mapping) or list(batch) != keys:
            return batches
        mask = batch["attention_mask"]
        if not isinstance(mask, torch.Tensor) or mask.dim() != 2 or mask.shape[1] != width:
            return batches
        for k in keys:
            v = batch[k]
            if (
                not isinstance(v, torch.Tensor)
                or v.shape[0] != mask.shape[0]
                or v.shape[1:] != first[k].shape[1:]
            ):
                return batches
            columns[k].append(v)
    samples = {k: torch.cat(v) for k, v in columns.items()}
    lengths = samples["attention_mask"].bool().sum(dim=1)
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(lengths), generator=generator)
    groups: list[torch.Tensor] = []
    for start in range(0, len(order), size * window):
        chunk = order[start : start + size * window]
        chunk = chunk[torch.argsort(lengths[chunk], descending=True, stable=True)]
        groups += list(chunk.split(size))
    shuffled = torch.randperm(len(groups), generator=generator).tolist()
    return [trim_padding({k: v[groups[i]] for k, v in samples.items()}) for i in shuffled]
