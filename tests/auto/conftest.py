"""A small MLP and CNN trained on digits, with train / validation / test loaders."""

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

import prunekit as pk
from prunekit.auto import validation_split
from prunekit.data import load_data


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(),
        nn.Linear(64, 10),
    )  # fmt: skip


def cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 64, 10)
    )


@pytest.fixture(scope="session")
def digits():
    """(train, val, test) loaders: val carved from the training split, test untouched."""
    splits = load_data("digits")
    train_set, val_set = validation_split(splits.train, 0.2, seed=0)
    train = DataLoader(
        train_set, batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(0)
    )
    return train, DataLoader(val_set, batch_size=512), splits.loader("test", batch_size=512)


def _trained(factory, train) -> nn.Module:
    model = factory()
    pk.finetune_(model, train, epochs=12, lr=3e-3, progress=False)
    return model.eval()


@pytest.fixture(scope="session")
def digits_mlp(digits):
    return _trained(mlp, digits[0])


@pytest.fixture(scope="session")
def digits_cnn(digits):
    return _trained(cnn, digits[0])
