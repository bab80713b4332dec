"""A small MobileNetV2-style CNN for 28×28 grayscale images: inverted residual blocks with
depthwise 3×3 convolutions, the layer type on which plain min/max int8 is known to struggle
(Nagel et al. 2019), sized to train on Fashion-MNIST in minutes on a laptop CPU."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

# (expansion t, output channels c, repeats n, first stride s) per stage, as in Sandler et al.
# 2018, scaled down for 28×28 inputs: the stride-2 stem gives 14×14, then 14 → 14 → 7 → 4.
DEFAULT_STAGES: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (4, 24, 2, 1),
    (4, 32, 2, 2),
    (4, 64, 2, 2),
)


def _conv_bn_relu(
    in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1
) -> list[nn.Module]:
    # ReLU rather than MobileNetV2's ReLU6: ReLU is positively homogeneous, so cross-layer
    # equalization across it is exact; ReLU6's clip at 6 is not.
    return [
        nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=kernel_size // 2,
            groups=groups,
            bias=False,
        ),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
    ]


class InvertedResidual(nn.Module):
    """1×1 expand (skipped when ``expansion == 1``) → depthwise 3×3 → 1×1 linear projection,
    BN after each; the input is added back when stride and width allow.

    ``x: [B, in_channels, H, W]`` → ``[B, out_channels, H / stride, W / stride]``.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_channels * expansion
        layers: list[nn.Module] = []
        if expansion != 1:
            layers += _conv_bn_relu(in_channels, hidden, 1)
        layers += _conv_bn_relu(hidden, hidden, 3, stride=stride, groups=hidden)
        layers += [nn.Conv2d(hidden, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels)]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: [B, C_in, H, W]`` → ``[B, C_out, H', W']``."""
        return x + self.conv(x) if self.residual else self.conv(x)


class MobileNetV2Small(nn.Module):
    """Stem conv 3×3 (stride 2) → inverted residual stages → 1×1 conv → global average pool
    → fc.

    Input ``[B, in_channels, 28, 28]`` (any size ≥ 8 works) → logits ``[B, num_classes]``.
    About 4 MMACs and 96k weights per sample at 28×28 with the default stages.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        stages: Sequence[tuple[int, int, int, int]] = DEFAULT_STAGES,
        stem_channels: int = 16,
        last_channels: int = 256,
    ) -> None:
        super().__init__()
        stem = _conv_bn_relu(in_channels, stem_channels, 3, stride=2)
        blocks: list[nn.Module] = [nn.Sequential(*stem)]
        channels = stem_channels
        for expansion, out_channels, repeats, stride in stages:
            for i in range(repeats):
                blocks.append(
                    InvertedResidual(channels, out_channels, stride if i == 0 else 1, expansion)
                )
                channels = out_channels
        blocks.append(nn.Sequential(*_conv_bn_relu(channels, last_channels, 1)))
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(last_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: [B, in_channels, 28, 28]`` → logits ``[B, num_classes]``."""
        return self.classifier(self.flatten(self.pool(self.features(x))))
