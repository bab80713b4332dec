"""The result type every dataset loader returns: a train and a test split plus what models need."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from prunekit.errors import PrunekitError

SPLITS = ("train", "test")


class Splits:
    """What every dataset's result offers: its ``train``/``test`` splits and loaders over them."""

    train: Dataset
    test: Dataset
    default_batch_size = 128

    def split(self, split: str) -> Dataset:
        """The ``train`` or ``test`` dataset."""
        if split not in SPLITS:
            raise PrunekitError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
        return self.train if split == "train" else self.test

    def loader(
        self,
        split: str,
        batch_size: int | None = None,
        shuffle: bool | None = None,
        seed: int = 0,
        num_samples: int | None = None,
    ) -> DataLoader:
        """Batches of one split (``default_batch_size`` unless given).

        ``shuffle`` defaults to True for ``train`` and False for ``test``; the order depends only
        on ``seed`` (each epoch of the returned loader draws a new order from it).
        ``num_samples`` keeps the first that many samples of the split (before shuffling), which
        makes quick runs cheap and reproducible.
        """
        dataset = self.split(split)
        batch_size = self.default_batch_size if batch_size is None else batch_size
        if batch_size < 1:
            raise PrunekitError(f"batch_size must be >= 1; got {batch_size}")
        if num_samples is not None:
            if num_samples < 1:
                raise PrunekitError(f"num_samples must be >= 1 or None; got {num_samples}")
            dataset = Subset(dataset, range(min(num_samples, len(dataset))))  # type: ignore[arg-type]
        if shuffle is None:
            shuffle = split == "train"
        generator = torch.Generator().manual_seed(seed)
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator)


@dataclass
class DataSplits(Splits):
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
