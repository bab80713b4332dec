"""What every exporter shares: silencing the exporters' chatter, and sizes for people."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager


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
