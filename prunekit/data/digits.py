"""scikit-learn's bundled handwritten digits: 1797 images of 8×8 pixels, 10 classes."""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch.utils.data import TensorDataset

from prunekit.data.splits import DataSplits

TEST_FRACTION = 0.2
SPLIT_SEED = 0


@functools.lru_cache(maxsize=1)
def _arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    # Imported here: scikit-learn takes about a second to import and only this loader needs it.
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = (bunch.images / 16.0).astype(np.float32)  # pixel values are 0..16
    labels = bunch.target.astype(np.int64)
    # Stratified so the 20 % test split keeps the class balance; fixed seed so it never moves.
    return tuple(  # type: ignore[return-value]
        train_test_split(
            images, labels, test_size=TEST_FRACTION, stratify=labels, random_state=SPLIT_SEED
        )
    )


def load_digits_splits() -> DataSplits:
    """The digits dataset as ``[N, 1, 8, 8]`` float inputs and int64 labels.

    1437 train and 360 test samples from a fixed stratified split; pixels are scaled to [0, 1]
    then normalised with the train split's mean and standard deviation.
    """
    x_train, x_test, y_train, y_test = _arrays()
    mean, std = float(x_train.mean()), float(x_train.std())

    def tensors(x: np.ndarray, y: np.ndarray) -> TensorDataset:
        inputs = (torch.from_numpy(x).unsqueeze(1) - mean) / std
        return TensorDataset(inputs, torch.from_numpy(y))

    return DataSplits(
        name="digits",
        train=tensors(x_train, y_train),
        test=tensors(x_test, y_test),
        num_classes=10,
        input_shape=(1, 8, 8),
    )
