"""Carving a validation split out of the training data, so the test split stays untouched."""

from __future__ import annotations

from collections.abc import Sized

import torch
from torch.utils.data import Dataset, Subset

from prunekit.errors import PrunekitError


def validation_split(
    dataset: Dataset, size: float | int = 0.1, seed: int = 0
) -> tuple[Subset, Subset]:
    """``(train, val)``: a random ``size`` of ``dataset`` held out (a fraction in (0, 1) or a
    number of samples), the rest kept for training. The split depends only on ``seed``."""
    if not isinstance(dataset, Sized):
        raise PrunekitError(f"dataset: needs a length; got {type(dataset).__name__}")
    n = len(dataset)
    count = round(size * n) if isinstance(size, float) else size
    if isinstance(size, float) and not 0.0 < size < 1.0:
        raise PrunekitError(f"size must be a fraction in (0, 1) or a sample count; got {size}")
    if not 1 <= count < n:
        raise PrunekitError(
            f"size: holds out {count} of {n} samples; hold out at least one and keep one to train"
        )
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return Subset(dataset, order[count:]), Subset(dataset, order[:count])
