"""A small VGG-style CNN with BatchNorm for 28×28 grayscale images (about 29 MMACs per sample)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

# Channels of each 3×3 conv; "M" is a 2×2 max-pool.
DEFAULT_LAYERS: tuple[int | str, ...] = (32, 32, "M", 64, 64, "M", 128, 128, "M")


class VGGBN(nn.Module):
    """VGG-style stack of conv 3×3 + BatchNorm + ReLU blocks, global average pool, one fc.

    Input ``[B, in_channels, H, W]`` (built for 28×28, any size ≥ 8 works) → ``[B, num_classes]``.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        layers: Sequence[int | str] = DEFAULT_LAYERS,
    ) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        channels = in_channels
        for layer in layers:
            if layer == "M":
                blocks.append(nn.MaxPool2d(2))
                continue
            assert isinstance(layer, int), layer
            # No conv bias: the BatchNorm after it has its own shift.
            blocks += [
                nn.Conv2d(channels, layer, kernel_size=3, padding=1, bias=False),
                nn.BatchNorm2d(layer),
                nn.ReLU(),
            ]
            channels = layer
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: [B, in_channels, 28, 28]`` → logits ``[B, num_classes]``."""
        return self.classifier(self.flatten(self.pool(self.features(x))))
