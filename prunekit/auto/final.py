"""After the search: retrain candidates longer and pick the delivered model.

Short trials underestimate what longer training recovers, so a configuration just over the
budget in its trial often holds it once retrained (successive halving's idea: promote the
promising to a higher fidelity). The cheapest trial within the budget is retrained first; if it
holds the budget on the validation data, cheaper configurations of the explored frontier are
promoted in turn, most accurate first, while they hold it; if it misses, the next costlier
feasible trials are tried. ``final_candidates`` retrainings at most. The validation data makes
every choice; the test data is looked at once, for the chosen model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from prunekit.auto.config import AutoConfig
from prunekit.auto.report import Final, TrialRecord, cost
from prunekit.auto.trial import compress, measure_model

log = logging.getLogger(__name__)


@dataclass
class Retrain:
    """Retrains one trial's configuration for ``final_epochs`` and measures it on val_data."""

    dense: nn.Module
    config: AutoConfig
    train_data: Any
    val_data: Any
    dense_val_accuracy: float
    order: torch.Tensor | None

    def __call__(self, record: TrialRecord) -> tuple[Final, nn.Module]:
        c = self.config
        model = compress(
            self.dense, record.choice, self.train_data, c.finetune_config(c.final_epochs),
            c.share_config(), self.order,
        )  # fmt: skip
        batch = c.latency_batch if c.objective == "latency" else None
        accuracy, size, latency = measure_model(model, self.val_data, batch)
        drop = 100 * (self.dense_val_accuracy - accuracy)
        final = Final(record.number, record.choice, accuracy, drop, size, latency,
                      within_budget=drop <= c.max_drop)  # fmt: skip
        log.info("retrained trial %d: %.2f points on val, %d bytes", record.number, drop, size)
        return final, model


def finalize(
    retrain: Retrain, records: list[TrialRecord], frontier: list[TrialRecord]
) -> tuple[Final | None, nn.Module | None]:
    """The chosen configuration retrained, and its model; (None, None) if no trial was
    feasible. If no retrained candidate holds the budget on val, the least-dropping one is
    returned with ``within_budget=False``."""
    objective, limit = retrain.config.objective, retrain.config.final_candidates
    feasible = sorted((r for r in records if r.feasible), key=lambda r: cost(r, objective))
    if not feasible:
        log.warning("no trial met the %g-point budget", retrain.config.max_drop)
        return None, None
    attempts: list[tuple[Final, nn.Module]] = []
    accepted = None
    for record in feasible[:limit]:
        attempts.append(retrain(record))
        if attempts[-1][0].within_budget:
            accepted = attempts[-1]
            break
    if accepted is not None and len(attempts) == 1:
        # The cheapest feasible trial held: try cheaper ones. (If it missed, cheaper ones will.)
        floor = cost(feasible[0], objective)
        cheaper = sorted((r for r in frontier if cost(r, objective) < floor),
                         key=lambda r: -cost(r, objective))  # fmt: skip
        for record in cheaper[: limit - len(attempts)]:
            attempts.append(retrain(record))
            if not attempts[-1][0].within_budget:
                break
            accepted = attempts[-1]
    final, model = accepted or min(attempts, key=lambda fm: fm[0].val_drop)
    final.attempts = [
        {"trial": f.trial, "val_drop": f.val_drop, "bytes": f.bytes, "latency_ms": f.latency_ms,
         "within_budget": f.within_budget}
        for f, _ in attempts
    ]  # fmt: skip
    return final, model
