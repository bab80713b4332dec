"""Fashion-MNIST from Debian's dataset-fashion-mnist folder, or from a folder of IDX files."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from prunekit.data import load_data
from prunekit.data.fashion_mnist import FILES
from prunekit.errors import DataNotFoundError, PrunekitError
from tests.data.test_idx import idx_bytes


def test_debian_copy_has_the_published_sizes() -> None:
    data = load_data("fashion-mnist")
    train_x, train_y = data.train.tensors
    test_x, test_y = data.test.tensors
    assert (len(data.train), len(data.test)) == (60000, 10000)
    assert train_x.shape == (60000, 1, 28, 28) and test_x.shape == (10000, 1, 28, 28)
    assert train_x.dtype == torch.float32 and train_y.dtype == torch.int64
    assert data.num_classes == 10 and data.input_shape == (1, 28, 28)
    assert torch.bincount(train_y).tolist() == [6000] * 10
    assert torch.bincount(test_y).tolist() == [1000] * 10
    # The published mean/std normalise the train split to about zero mean, unit variance.
    assert abs(float(train_x.mean())) < 0.01
    assert abs(float(train_x.std()) - 1.0) < 0.01


def write_folder(folder: Path, n_train: int = 12, n_test: int = 5) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, n_train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    folder.mkdir(exist_ok=True)
    for i, (key, array) in enumerate(arrays.items()):
        raw = idx_bytes(array)
        if i % 2:  # a mix of gzipped and plain files, as people unpack them
            (folder / f"{FILES[key]}.gz").write_bytes(gzip.compress(raw))
        else:
            (folder / FILES[key]).write_bytes(raw)
    return arrays


def test_reads_a_user_folder(tmp_path: Path) -> None:
    arrays = write_folder(tmp_path)
    data = load_data(f"fashion-mnist:{tmp_path}")
    inputs, labels = data.train.tensors
    assert inputs.shape == (12, 1, 28, 28) and len(data.test) == 5
    expected = (arrays["train_images"][:, None] / 255.0 - 0.2860) / 0.3530
    np.testing.assert_allclose(inputs.numpy(), expected, rtol=1e-5, atol=1e-5)
    assert labels.tolist() == arrays["train_labels"].tolist()


def test_missing_folder_names_the_package_and_the_alternative() -> None:
    with pytest.raises(DataNotFoundError) as err:
        load_data("fashion-mnist:/nonexistent")
    assert "apt-get install dataset-fashion-mnist" in str(err.value)
    assert "fashion-mnist:DIR" in str(err.value)


def test_missing_file_is_named(tmp_path: Path) -> None:
    write_folder(tmp_path)
    (tmp_path / f"{FILES['test_labels']}.gz").unlink()
    with pytest.raises(DataNotFoundError, match="t10k-labels-idx1-ubyte"):
        load_data(f"fashion-mnist:{tmp_path}")


def test_images_and_labels_of_different_lengths_are_rejected(tmp_path: Path) -> None:
    write_folder(tmp_path)
    labels = np.zeros(11, dtype=np.uint8)  # train images hold 12
    (tmp_path / FILES["train_labels"]).write_bytes(idx_bytes(labels))
    with pytest.raises(PrunekitError, match="do not match"):
        load_data(f"fashion-mnist:{tmp_path}")


def test_corrupt_header_is_a_prunekit_error(tmp_path: Path) -> None:
    write_folder(tmp_path)
    (tmp_path / FILES["train_images"]).write_bytes(b"\xff" * 64)
    with pytest.raises(PrunekitError, match="not an IDX file"):
        load_data(f"fashion-mnist:{tmp_path}")
