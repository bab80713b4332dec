"""Language-model measurements: perplexity of causal LMs, sentence embeddings of encoders.

``perplexity`` is exp of the token-weighted mean next-token negative log-likelihood, from the
model's own loss on ``labels`` (Hugging Face shifts them inside). Sentence embeddings follow the
sentence-transformers recipe: token states mean-pooled over the attention mask, L2-normalised.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from prunekit.data.batches import split_batch, take_samples
from prunekit.errors import PrunekitError
from prunekit.measure._common import evaluating, model_device, to_device
from prunekit.measure.accuracy import IGNORE_INDEX


def perplexity(model: nn.Module, data: Iterable[Any], *, num_samples: int | None = None) -> float:
    """exp(mean NLL per predicted token) of a causal LM over ``data``.

    ``data``: batches of ``{"input_ids" [B, T], "attention_mask", "labels" [B, T]}`` (as
    ``TextSplits.loader`` gives in ``stream`` mode) or bare ``input_ids`` tensors, whose labels
    are the inputs. Each batch's mean loss is weighted by its number of predicted tokens (labels
    after the first position that are not -100). With ``num_samples``, whole batches until
    that many windows were read. The model runs in eval mode without gradients; its modes are
    restored after.
    """
    device = model_device(model)
    total_nll, total_tokens = 0.0, 0
    with evaluating(model), torch.no_grad():
        for batch in take_samples(data, num_samples):
            inputs, labels = split_batch(batch)
            if not isinstance(inputs, Mapping):
                inputs = {"input_ids": inputs}
            if labels is None:
                labels = inputs["input_ids"]
            out = model(**to_device(inputs, device), labels=labels.to(device))
            loss = getattr(out, "loss", None)
            if not isinstance(loss, torch.Tensor):
                raise PrunekitError(
                    f"model: perplexity needs a causal LM that returns a loss for labels (e.g. "
                    f"loaded with AutoModelForCausalLM); {type(model).__name__} returned none"
                )
            tokens = int((labels[:, 1:] != IGNORE_INDEX).sum())
            total_nll += float(loss.double()) * tokens
            total_tokens += tokens
    if total_tokens == 0:
        raise PrunekitError("data: got no tokens to predict; pass windows of at least 2 tokens")
    return math.exp(total_nll / total_tokens)


def mean_pooled(model: nn.Module, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Sentence embeddings ``[B, H]``: ``model``'s last token states ``[B, T, H]`` averaged over
    ``inputs["attention_mask"]`` and L2-normalised. Runs as called (no mode or grad change)."""
    out = model(**inputs)
    states = getattr(out, "last_hidden_state", None)
    if states is None and isinstance(out, (tuple, list)):
        states = out[0]
    if not isinstance(states, torch.Tensor) or states.dim() != 3:
        raise PrunekitError(
            f"model: embeddings need an encoder returning token states [B, T, H] "
            f"(last_hidden_state, e.g. loaded with AutoModel); {type(model).__name__} gave "
            f"{type(out).__name__}"
        )
    mask = inputs.get("attention_mask")
    if mask is None:
        mask = torch.ones(states.shape[:2], device=states.device)
    weights = mask.unsqueeze(-1).to(states.dtype)
    pooled = (states * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
    return F.normalize(pooled.float(), dim=-1)


def embed(
    model: nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    batch_size: int = 64,
    max_length: int = 128,
    fixed_length: bool = False,
) -> torch.Tensor:
    """L2-normalised sentence embeddings ``[len(texts), H]`` (see ``mean_pooled``), on the CPU.

    Texts are tokenized in batches, truncated to ``max_length`` tokens and padded to the
    longest in the batch (to ``max_length`` with ``fixed_length``). Eval mode, no grad.
    """
    if not texts:
        raise PrunekitError("texts: got none; pass at least one string")
    device = model_device(model)
    chunks = []
    with evaluating(model), torch.no_grad():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(
                list(texts[start : start + batch_size]),
                padding="max_length" if fixed_length else True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            )
            chunks.append(mean_pooled(model, to_device(dict(batch), device)).cpu())
    return torch.cat(chunks)


def embedding_fidelity(
    model: nn.Module,
    reference_model: nn.Module,
    data: Iterable[Any],
    *,
    num_samples: int | None = None,
) -> float:
    """Mean cosine similarity between the two models' sentence embeddings of the same texts.

    ``data``: tokenized batches ``{"input_ids", "attention_mask", ...}`` (``TextSplits.loader``
    in ``lines`` mode); 1.0 means ``model`` embeds exactly like ``reference_model``. With
    ``num_samples``, whole batches until that many texts were read. Both run in eval mode
    without gradients; their modes are restored after.
    """
    total, count = 0.0, 0
    with evaluating(model), evaluating(reference_model), torch.no_grad():
        for batch in take_samples(data, num_samples):
            inputs, _ = split_batch(batch)
            if not isinstance(inputs, Mapping):
                inputs = {"input_ids": inputs}
            ours = mean_pooled(model, to_device(inputs, model_device(model)))
            ref = mean_pooled(reference_model, to_device(inputs, model_device(reference_model)))
            total += float((ours * ref.to(ours.device)).sum())
            count += ours.shape[0]
    if count == 0:
        raise PrunekitError("data: got no batches; pass at least one tokenized batch")
    return total / count
