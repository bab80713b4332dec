"""LeNet models of the pruning literature (LeCun et al. 1998, Caffe variant; Han et al. 2015)."""

from __future__ import annotations

import torch
from torch import nn


class LeNet300(nn.Module):
    """LeNet-300-100: a 784→300→100→classes MLP with ReLU; input ``[B, 1, 28, 28]``."""

    def __init__(self, num_classes: int = 10, in_features: int = 28 * 28) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(in_features, 300)
        self.fc2 = nn.Linear(300, 100)
        self.fc3 = nn.Linear(100, num_classes)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: [B, 1, 28, 28]`` → logits ``[B, num_classes]``."""
        x = self.relu(self.fc1(self.flatten(x)))
        x = self.relu(self.fc2(x))
        return self.fc3(x)


class LeNet5(nn.Module):
    """LeNet-5 as in Caffe: conv 20@5×5 → pool → conv 50@5×5 → pool → fc 500 → fc classes.

    Input ``[B, in_channels, 28, 28]``; 430,500 weights plus 580 biases for 10 classes.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 20, kernel_size=5)
        self.conv2 = nn.Conv2d(20, 50, kernel_size=5)
        self.pool = nn.MaxPool2d(2)
        self.relu = nn.ReLU()
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(50 * 4 * 4, 500)
        self.fc2 = nn.Linear(500, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: [B, in_channels, 28, 28]`` → logits ``[B, num_classes]``."""
        x = self.pool(self.relu(self.conv1(x)))  # [B, 20, 12, 12]
        x = self.pool(self.relu(self.conv2(x)))  # [B, 50, 4, 4]
        x = self.relu(self.fc1(self.flatten(x)))
        return self.fc2(x)
