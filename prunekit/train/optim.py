"""The optimizer and the learning-rate schedule a :class:`FinetuneConfig` asks for."""

from __future__ import annotations

import math
import time
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


class TimeBox:
    """A wall-clock budget of ``minutes`` for a run of ``total_steps`` steps (None: no budget,
    the step count alone). ``elapsed`` gives the seconds spent, agreed by all ranks of a
    distributed run (the slowest rank's) so that they stop together."""

    def __init__(
        self, minutes: float | None, total_steps: int, elapsed: Callable[[float], float]
    ) -> None:
        self.budget = None if minutes is None else 60.0 * minutes
        self.total = total_steps
        self.start = time.perf_counter()
        self._agree = elapsed
        self.seconds = 0.0

    def position(self, step: int) -> int:
        """Where ``step`` sits in the schedule: itself, or further on where the time spent is a
        larger fraction of the budget than the step of all steps (the schedule then ends at
        the deadline)."""
        if self.budget is None:
            return step
        return max(step, min(int(self.seconds / self.budget * self.total), self.total - 1))

    def out_of_time(self, steps_done: int) -> bool:
        """Whether another step, as long as the average so far, would end past the budget;
        also updates the time spent that :meth:`position` reads."""
        if self.budget is None:
            return False
        self.seconds = self._agree(time.perf_counter() - self.start)
        per_step = self.seconds / steps_done if steps_done else 0.0
        return self.seconds + per_step > self.budget
