"""The result type every dataset loader returns: a train and a test split plus what models need."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from prunekit.errors import PrunekitError

SPLITS = ("train", "test")


@dataclass
class DataSplits:
    """A dataset's two splits.

    ``train``/``test`` yield ``(inputs, label)`` samples; ``input_shape`` is one sample's input
    shape without the batch dimension (e.g. ``(1, 28, 28)``); ``num_classes`` is None when the
    labels are not class indices.
    """

    name: str
    train: Dataset
    test: Dataset
    num_classes: int | None
    input_shape: tuple[int, ...]

    def split(self, split: str) -> Dataset:
        """The ``train`` or ``test`` dataset."""
        if split not in SPLITS:
            raise PrunekitError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
        return self.train if split == "train" else self.test

    def loader(
        self,
        split: str,
        batch_size: int = 128,
        shuffle: bool | None = None,
        seed: int = 0,
        limit: int | None = None,
    ) -> DataLoader:
        """Batches ``(inputs [B, *input_shape], labels [B])`` of one split.

        ``shuffle`` defaults to True for ``train`` and False for ``test``; the order depends only
        on ``seed`` (each epoch of the returned loader draws a new order from it). ``limit`` keeps
        the first ``limit`` samples of the split, which makes quick runs cheap and reproducible.
        """
        dataset = self.split(split)
        if batch_size < 1:
            raise PrunekitError(f"batch_size must be >= 1; got {batch_size}")
        if limit is not None:
            if limit < 1:
                raise PrunekitError(f"limit must be >= 1 or None; got {limit}")
            dataset = Subset(dataset, range(min(limit, len(dataset))))  # type: ignore[arg-type]
        if shuffle is None:
            shuffle = split == "train"
        generator = torch.Generator().manual_seed(seed)
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator)
