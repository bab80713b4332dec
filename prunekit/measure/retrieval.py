"""A dense-retrieval task on real text, scored as recall@1 and MRR: WordNet definition → words.

Query ``i`` is a noun synset's definition ("a series of hills or mountains"); its one relevant
document is that synset's words ("range, mountain range, chain"); every other query's words are
distractors. The default task is the first 1000 synsets of ``prunekit.data.wordnet``'s held-out
set (seed 0); the dense all-MiniLM-L6-v2 scores recall@1 0.478, MRR 0.553 (chance 0.001).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunekit.data.wordnet import HELD_OUT, SEED, split_synsets
from prunekit.errors import PrunekitError
from prunekit.measure.text import embed


@dataclass(frozen=True)
class RetrievalTask:
    """``queries[i]``'s one relevant document is ``documents[i]``; the rest are distractors."""

    name: str
    queries: Sequence[str]
    documents: Sequence[str]

    def __post_init__(self) -> None:
        if len(self.queries) != len(self.documents) or not self.queries:
            raise PrunekitError(
                f"retrieval task {self.name!r}: needs as many documents as queries (>0); got "
                f"{len(self.queries)} queries, {len(self.documents)} documents"
            )


@dataclass(frozen=True)
class RetrievalScore:
    """``recall_at_1``: fraction of queries whose document ranks first; ``mrr``: mean 1/rank."""

    recall_at_1: float
    mrr: float
    num_queries: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def wordnet_retrieval(
    num_queries: int = 1000, *, seed: int = SEED, path: str | Path | None = None
) -> RetrievalTask:
    """The WordNet definition → words task over the first ``num_queries`` held-out synsets."""
    if not 2 <= num_queries <= HELD_OUT:
        raise PrunekitError(f"num_queries must be in [2, {HELD_OUT}]; got {num_queries}")
    held_out, _ = split_synsets(path, seed)
    chosen = held_out[:num_queries]
    return RetrievalTask(
        name=f"wordnet-definitions-{num_queries}",
        queries=[s.definition for s in chosen],
        documents=[", ".join(s.words) for s in chosen],
    )


def rank_scores(similarity: torch.Tensor) -> RetrievalScore:
    """Recall@1 and MRR from ``similarity [Q, Q]`` whose diagonal holds the relevant pairs.

    A document's rank counts the documents scored strictly higher, so ties favour the relevant one.
    """
    relevant = similarity.diagonal().unsqueeze(1)
    rank = (similarity > relevant).sum(dim=1) + 1
    return RetrievalScore(
        recall_at_1=float((rank == 1).double().mean()),
        mrr=float((1.0 / rank.double()).mean()),
        num_queries=int(similarity.shape[0]),
    )


def retrieval_scores(
    model: nn.Module,
    tokenizer: Any,
    task: RetrievalTask,
    *,
    batch_size: int = 64,
    max_length: int = 128,
    fixed_length: bool = False,
) -> RetrievalScore:
    """Score ``model`` as a dense retriever on ``task``: cosine of mean-pooled embeddings.
    ``fixed_length``: every batch padded to ``max_length`` (a program with fixed shapes)."""
    options = {"batch_size": batch_size, "max_length": max_length, "fixed_length": fixed_length}
    queries = embed(model, tokenizer, task.queries, **options)
    docs = embed(model, tokenizer, task.documents, **options)
    return rank_scores(queries @ docs.T)
