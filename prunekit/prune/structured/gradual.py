"""Structured pruning in steps while training (iterative or gradual, Molchanov et al. 2019).

Each step removes what is needed to reach the schedule's cumulative target, counted against the
model as it was before the first step, then training continues on the smaller model. The
training loop's ``surgery.transaction`` rolls a failed run back whole.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import nn

from prunekit.calibrate import LossFn
from prunekit.config import PruneConfig
from prunekit.errors import PrunekitError
from prunekit.prune.structured.api import prune_structured_
from prunekit.prune.structured.report import StructuredReport


class StructuredSteps:
    def __init__(self, config: PruneConfig, example_inputs: Any) -> None:
        if config.latency_reduction is not None:
            raise PrunekitError(
                "latency_reduction is measured on the finished model: prune one-shot with "
                "prune_(model, config, example_inputs=...), then fine-tune; a gradual schedule "
                "takes macs_reduction"
            )
        self.config = config
        self.example_inputs = example_inputs
        self.done = 0.0  # fraction of the final target reached so far
        self.dense_macs: int | None = None
        self.macs: int | None = None
        self.reports: list[StructuredReport] = []

    def step(
        self,
        model: nn.Module,
        target: float,
        data: Iterable[Any] | None,
        loss_fn: LossFn | None,
    ) -> StructuredReport | None:
        """Prune toward ``target`` (a cumulative sparsity on the schedule's scale)."""
        final = self.config.schedule_final
        f = min(target / final, 1.0) if final > 0 else 1.0
        if f <= self.done + 1e-9:
            return None
        report = prune_structured_(
            model, self._increment(f), data, example_inputs=self.example_inputs,
            loss_fn=loss_fn,
        )  # fmt: skip
        if self.dense_macs is None:
            self.dense_macs = report.macs[0]
        self.macs = report.macs[1]
        self.done = f
        self.reports.append(report)
        return report

    def _increment(self, f: float) -> PruneConfig:
        """The config for one step: the ratio of what is *left* to remove now."""
        c, done = self.config, self.done

        def step_ratio(total: float) -> float:
            return max(0.0, 1.0 - (1.0 - f * total) / (1.0 - done * total))

        layers = {k: step_ratio(v) for k, v in c.layer_sparsity.items()}
        if c.macs_reduction is not None:
            # Interpolate the MACs between dense and the final target, then ask for the
            # reduction from where the model is now.
            share = 1.0 - f * (1.0 - 1.0 / c.macs_reduction)  # of the dense MACs, at this step
            now = 1.0 if self.dense_macs is None else self.macs / self.dense_macs
            return c.model_copy(
                update={"macs_reduction": max(1.0, now / share), "layer_sparsity": layers}
            )
        return c.model_copy(
            update={"sparsity": step_ratio(c.target_sparsity), "layer_sparsity": layers}
        )
