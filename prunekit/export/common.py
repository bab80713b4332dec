"""What every exporter shares: silencing the exporters' chatter, and sizes for people."""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch


@contextmanager
def quiet(loggers: Sequence[str]) -> Iterator[None]:
    """Warnings off and ``loggers`` at ERROR for the block: exporters log their attempts and
    fallbacks (missing torchvision, constant folding), which tell a user nothing."""
    found = [logging.getLogger(n) for n in loggers]
    levels = [lg.level for lg in found]
    for lg in found:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(found, levels, strict=True):
            lg.setLevel(level)


def human_size(n: int) -> str:
    """Bytes as kB below 100 kB, else MB."""
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


class Deviation:
    """How far a runtime's outputs are from PyTorch's, over every output compared: the largest
    absolute difference and the SQNR (10 log10 of sum y^2 over sum (y_runtime - y)^2, in dB)."""

    def __init__(self) -> None:
        self.worst, self._signal, self._noise = 0.0, 0.0, 0.0

    def add(self, got: torch.Tensor, expected: torch.Tensor) -> float:
        """Count one output pair (float64, same shape); returns its largest |difference|."""
        diff = (got - expected).abs().max().item() if expected.numel() else 0.0
        self.worst = max(self.worst, diff)
        self._signal += expected.square().sum().item()
        self._noise += (got - expected).square().sum().item()
        return diff

    @property
    def sqnr_db(self) -> float:
        if self._noise > 0 and self._signal > 0:
            return 10 * math.log10(self._signal / self._noise)
        return math.inf
