"""Perplexity, sentence-embedding fidelity and the WordNet retrieval task on real models."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
import transformers

from prunekit.errors import PrunekitError
from prunekit.measure import (
    embedding_fidelity,
    perplexity,
    retrieval_scores,
    wordnet_retrieval,
)
from prunekit.measure.retrieval import RetrievalTask, rank_scores
from prunekit.models.minilm import load_minilm, minilm_tokenizer
from tests import hf_zoo

VOCAB = 211


def tiny_gpt2() -> transformers.GPT2LMHeadModel:
    return hf_zoo.gpt2(VOCAB)


def tiny_bert() -> transformers.BertModel:
    return hf_zoo.bert(VOCAB)


def windows(n: int, seq_len: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, VOCAB, (n, seq_len), generator=torch.Generator().manual_seed(seed))


def stream_batch(ids: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}


def test_perplexity_of_one_window_is_exp_of_the_hand_computed_loss() -> None:
    model, ids = tiny_gpt2(), windows(1)
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    nll = F.cross_entropy(logits[0, :-1].double(), ids[0, 1:])
    assert perplexity(model, [stream_batch(ids)]) == pytest.approx(math.exp(nll), rel=1e-5)


def test_random_model_perplexity_is_about_the_vocabulary_size() -> None:
    assert VOCAB / 3 < perplexity(tiny_gpt2(), [windows(4)]) < VOCAB * 3


def test_perplexity_weights_batches_by_their_tokens() -> None:
    model, ids = tiny_gpt2(), windows(5)
    whole = perplexity(model, [stream_batch(ids)])
    uneven = perplexity(model, [stream_batch(ids[:4]), stream_batch(ids[4:])])
    assert uneven == pytest.approx(whole, rel=1e-6)
    first = perplexity(model, [stream_batch(ids[:4])])
    assert perplexity(model, [stream_batch(ids[:4]), stream_batch(ids[4:])], num_samples=3) == first
    assert model.training is False


def test_perplexity_needs_a_causal_lm() -> None:
    with pytest.raises(PrunekitError, match="AutoModelForCausalLM"):
        perplexity(tiny_bert(), [windows(2)])


def test_fidelity_is_one_with_itself_and_drops_when_perturbed() -> None:
    model = tiny_bert()
    mask = torch.ones(6, 16, dtype=torch.long)
    mask[:, 12:] = 0  # padded positions must not count
    data = [{"input_ids": windows(6), "attention_mask": mask}]
    assert embedding_fidelity(model, copy.deepcopy(model), data) == pytest.approx(1.0, abs=1e-6)
    noisy = copy.deepcopy(model)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in noisy.encoder.parameters():
            p.add_(0.1 * torch.randn_like(p))
    fidelity = embedding_fidelity(noisy, model, data)
    assert 0.0 < fidelity < 0.99


def test_rank_scores_on_a_known_similarity_matrix() -> None:
    similarity = torch.tensor([[0.9, 0.1, 0.2], [0.5, 0.4, 0.3], [0.1, 0.8, 0.7]])
    score = rank_scores(similarity)
    assert score.recall_at_1 == pytest.approx(1 / 3)
    assert score.mrr == pytest.approx((1 + 1 / 2 + 1 / 2) / 3)
    with pytest.raises(PrunekitError, match="as many documents as queries"):
        RetrievalTask("bad", ["q"], [])


def test_wordnet_task_is_fixed() -> None:
    task = wordnet_retrieval(20)
    assert task.queries == wordnet_retrieval(20).queries
    assert task.queries[:5] == wordnet_retrieval(1000).queries[:5]
    assert all(q and d for q, d in zip(task.queries, task.documents, strict=True))
    with pytest.raises(PrunekitError, match="num_queries must be in"):
        wordnet_retrieval(1)


@pytest.mark.slow  # ~5 s idle, twice that on a loaded 2-core machine
def test_dense_minilm_retrieves_definitions_well_above_chance() -> None:
    score = retrieval_scores(load_minilm(), minilm_tokenizer(), wordnet_retrieval(100))
    assert score.num_queries == 100
    assert 0.4 <= score.recall_at_1 <= 0.9  # chance: 1/100
    assert score.recall_at_1 <= score.mrr <= 1


class _FixedShape(torch.nn.Module):
    """A program with fixed shapes: refuses any sequence length but its own."""

    def __init__(self, model: torch.nn.Module, length: int) -> None:
        super().__init__()
        self.model, self.length = model, length

    def forward(self, **inputs: torch.Tensor):
        assert all(v.shape[1] == self.length for v in inputs.values())
        return self.model(**inputs)


def test_fixed_length_retrieval_pads_every_batch_and_scores_the_same() -> None:
    model, tok, task = load_minilm(), minilm_tokenizer(), wordnet_retrieval(40)
    score = retrieval_scores(model, tok, task, batch_size=8, max_length=48)
    fixed = retrieval_scores(
        _FixedShape(model, 48), tok, task, batch_size=8, max_length=48, fixed_length=True
    )
    # Padding is masked out of the mean: the same ranking, up to float rounding.
    assert fixed.recall_at_1 == score.recall_at_1 and fixed.mrr == pytest.approx(score.mrr)
    with pytest.raises(AssertionError):
        retrieval_scores(_FixedShape(model, 48), tok, task, batch_size=8, max_length=48)
