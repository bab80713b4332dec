"""A small CNN trained on digits in a few seconds: real accuracy, real fragile layers."""

import pytest
import torch
from torch import nn

from prunekit.data import load_data
from prunekit.measure.accuracy import top1_accuracy


class DigitsCNN(nn.Module):
    """conv1 (1→8 channels: 72 weights, fragile) → conv2 → fc (wide) → out."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.fc = nn.Linear(16 * 4 * 4, 128)
        self.out = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv1(x))
        h = nn.functional.max_pool2d(torch.relu(self.conv2(h)), 2)
        return self.out(torch.relu(self.fc(h.flatten(1))))


@pytest.fixture(scope="session")
def digits():
    splits = load_data("digits")
    return splits.loader("train", batch_size=64, seed=0), splits.loader("test", batch_size=360)


@pytest.fixture(scope="session")
def trained(digits):
    train, _ = digits
    torch.manual_seed(0)
    model = DigitsCNN()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(8):  # ~97% test accuracy in a few seconds
        for x, y in train:
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


class Accuracy:
    """evaluate(model) → top-1 accuracy on the test split, in percent (picklable for Ray)."""

    def __init__(self, test) -> None:
        self.test = test

    def __call__(self, model: nn.Module) -> float:
        return 100.0 * top1_accuracy(model, self.test)[0]


@pytest.fixture(scope="session")
def accuracy(digits):
    return Accuracy(digits[1])
