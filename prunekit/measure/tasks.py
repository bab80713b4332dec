"""Task metrics for text models, named with the settings they were measured under.

A perplexity is meaningless without its sequence length, number of windows and split, so each
metric's name carries them: ``perplexity (test split of eval.txt: 40 windows × 128 tokens)``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from torch import nn

from prunekit.errors import PrunekitError
from prunekit.measure.text import embedding_fidelity, perplexity

log = logging.getLogger(__name__)


def text_metrics(
    splits: Any, reference: nn.Module | None = None, *, retrieval_queries: int = 0
) -> Any:
    """``metrics(model) -> {name: value}`` for ``prunekit.measure.compare``.

    ``splits``: a ``TextSplits``. Causal LMs (``stream`` windows) get perplexity on the test
    split; encoders (``lines``) get embedding fidelity to ``reference`` on the test split and,
    with ``retrieval_queries``, WordNet definition→words retrieval recall@1 and MRR.
    """
    test = splits.loader("test", batch_size=16)
    n = len(splits.test)
    where = f"test split of {Path(splits.name.removeprefix('text:')).name}"
    if splits.mode == "stream":
        name = f"perplexity ({where}: {n} windows × {splits.seq_len} tokens)"
        return lambda model: {name: perplexity(model, test)}

    fidelity = (
        f"embedding fidelity, mean cosine to dense ({where}: {n} lines, ≤{splits.seq_len} tokens)"
    )
    task = _retrieval_task(retrieval_queries)

    def metrics(model: nn.Module) -> dict[str, float]:
        out: dict[str, float] = {}
        if task is not None:
            from prunekit.measure.retrieval import retrieval_scores

            score = retrieval_scores(model, splits.tokenizer, task)
            label = f"{score.num_queries:,} held-out WordNet definitions → words"
            out[f"retrieval recall@1 ({label})"] = score.recall_at_1
            out[f"retrieval MRR ({label})"] = score.mrr
        if reference is not None:
            out[fidelity] = embedding_fidelity(model, reference, test)
        return out

    return metrics


def _retrieval_task(num_queries: int) -> Any:
    if num_queries <= 0:
        return None
    from prunekit.measure.retrieval import wordnet_retrieval

    try:
        return wordnet_retrieval(num_queries)
    except PrunekitError as err:
        log.warning("retrieval task unavailable: %s", err)
        return None
