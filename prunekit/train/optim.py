"""The optimizer and the learning-rate schedule a :class:`FinetuneConfig` asks for."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import nn

from prunekit.train.config import TrainingSettings

SGD_MOMENTUM = 0.9


def make_optimizer(
    params: Iterable[nn.Parameter], config: TrainingSettings
) -> torch.optim.Optimizer:
    """``config.optimizer`` over the trainable ``params`` at ``config.lr``."""
    params = [p for p in params if p.requires_grad]
    wd = config.weight_decay
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=config.lr, momentum=SGD_MOMENTUM, weight_decay=wd, nesterov=True
        )
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=wd)
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=wd)


def lr_factor(config: TrainingSettings, total_steps: int) -> Callable[[int], float]:
    """The multiplier of ``config.lr`` at each step 0…total_steps−1: a linear warm-up over
    ``round(warmup·total_steps)`` steps, then ``config.lr_schedule``."""
    warmup = round(config.warmup * total_steps)
    decay_steps = max(total_steps - warmup, 1)
    kind = config.lr_schedule

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min((step - warmup) / decay_steps, 1.0)
        if kind == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        if kind == "linear":
            return 1.0 - progress
        return 1.0

    return factor


def make_scheduler(
    optimizer: torch.optim.Optimizer, factor: Callable[[int], float], start: int = 0
) -> torch.optim.lr_scheduler.LambdaLR:
    """Sets ``optimizer``'s learning rate to ``lr·factor(start + k)`` at its k-th step; a fresh
    optimizer (after a structured pruning step rebuilt the layers) goes on at ``start``."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: factor(start + k))
