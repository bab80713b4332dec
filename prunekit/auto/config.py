"""The auto-compression config: pure, validated data."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from prunekit.train.config import FinetuneConfig, TrainingSettings


class AutoConfig(TrainingSettings):
    """How ``auto_compress`` searches, and how its trials train: the training fields of
    :class:`prunekit.FinetuneConfig` (``lr``, ``lr_schedule``, ``warmup``, ``optimizer``,
    ``temperature``, ``alpha``…; the dense model always teaches), with the epochs below.

    max_drop: accuracy budget, in percentage points below the dense model (1.0: one point).
    objective: ``"size"`` (bytes of the saved artifact) or ``"latency"`` (median ms of one
        forward pass at ``latency_batch``); the search minimises it within the budget.
    trials: configurations tried; trial_epochs: fine-tuning epochs of each; final_epochs:
        fine-tuning epochs of the chosen configuration once the search is over (plus one for
        the shared values when it shares weights).
    share_lr: the learning rate of fine-tuning the shared values after k-means.
    bits: the range of k-means bits searched for fully connected layers (``objective="size"``);
        convolutions search ``conv_bits`` (they tolerate less sharing).
    one_shot_limit: the profile bounds each layer's sparsity from above by the largest ratio
        at which pruning that layer alone, one-shot, costs at most this many points. Fine-tuning
        recovers much of a one-shot drop (Fashion-MNIST LeNet-300-100 loses 19 points with its
        first layer pruned 95% one-shot, 0.7 with every layer pruned 95% and fine-tuned:
        bench/results/deep_compression.md), so a bound tied to ``max_drop`` would cut off the
        good configurations; past a cliff like this one, fine-tuning rarely recovers.
    parallel: trials proposed at once and run side by side (Ray, or one after the other
        in-process); 1 gives the sampler every result before it proposes the next.
    final_candidates: configurations retrained for ``final_epochs`` at most: the cheapest
        feasible trial, then cheaper frontier trials while they hold the budget on the
        validation data once retrained (or costlier feasible ones if it does not).
    seed: the sampler's seed and every trial's (data order, fine-tuning).
    """

    max_drop: float = Field(1.0, gt=0.0, le=100.0)
    objective: Literal["size", "latency"] = "size"
    trials: int = Field(20, ge=1)
    trial_epochs: int = Field(1, ge=1)
    final_epochs: int = Field(4, ge=1)
    lr: float = Field(1e-3, gt=0.0)  # the search's measured budgets were set at this rate
    share_lr: float = Field(1e-4, gt=0.0)
    bits: tuple[int, int] = (4, 8)
    conv_bits: tuple[int, int] = (5, 8)
    one_shot_limit: float = Field(25.0, gt=0.0)
    parallel: int = Field(1, ge=1)
    final_candidates: int = Field(3, ge=1)
    latency_batch: int = Field(64, ge=1)
    seed: int = 0

    def finetune_config(self, epochs: int) -> FinetuneConfig:
        """The training of a trial (``trial_epochs``) or of the final retraining."""
        fields = {k: v for k, v in self.model_dump().items() if k in FinetuneConfig.model_fields}
        return FinetuneConfig(**{**fields, "epochs": epochs, "seed": self.seed})

    def share_config(self) -> FinetuneConfig:
        """The one epoch of training the shared values get after k-means, at ``share_lr``."""
        return self.finetune_config(1).model_copy(update={"lr": self.share_lr})

    @model_validator(mode="after")
    def _bit_ranges(self) -> AutoConfig:
        for name in ("bits", "conv_bits"):
            lo, hi = getattr(self, name)
            if not 1 <= lo <= hi <= 8:
                raise ValueError(
                    f"{name} must be (low, high) with 1 <= low <= high <= 8; got ({lo}, {hi})"
                )
        return self
