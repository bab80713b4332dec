"""scikit-learn's digits: a fixed, stratified, normalised split."""

from __future__ import annotations

import torch

from prunekit.data import load_data


def test_shapes_and_types() -> None:
    data = load_data("digits")
    inputs, labels = data.train.tensors
    assert (len(data.train), len(data.test)) == (1437, 360)
    assert inputs.shape == (1437, 1, 8, 8) and inputs.dtype == torch.float32
    assert labels.dtype == torch.int64
    assert data.num_classes == 10 and data.input_shape == (1, 8, 8)
    assert abs(float(inputs.mean())) < 1e-4 and abs(float(inputs.std()) - 1.0) < 1e-3


def test_split_is_deterministic() -> None:
    a, b = load_data("digits"), load_data("digits")
    for split in ("train", "test"):
        for x, y in zip(a.split(split).tensors, b.split(split).tensors, strict=True):
            assert torch.equal(x, y)


def test_split_is_stratified() -> None:
    data = load_data("digits")
    train = torch.bincount(data.train.tensors[1], minlength=10).float()
    test = torch.bincount(data.test.tensors[1], minlength=10).float()
    # Each class keeps its 20 % share of the test split, up to rounding.
    share = test / (train + test)
    assert torch.all((share - 0.2).abs() < 0.01), share
