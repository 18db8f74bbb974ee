"""ResNets for 32x32 inputs: the paper's CIFAR ResNet-18/34 and He et al.'s ResNet-(6n+2).

Both families are the same network: a 3x3 stride-1 stem (no max-pool), stages of post-activation
BasicBlocks, the first stage at stride 1 and every later one at stride 2, global average pooling
and a linear head. They differ only in depth and widths.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from autodrop.checks import check_int
from models.weight_init import init_conv_bn_


class BasicBlock(nn.Module):
    """Post-activation block: conv3x3-BN-ReLU-conv3x3-BN, add the shortcut, ReLU.

    The shortcut is the identity when the shape is kept, else a 1x1 conv + BN projection
    (He et al.'s option B).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """Stem of ``widths[0]`` channels, then one stage of BasicBlocks per entry of ``widths``."""

    def __init__(
        self,
        blocks_per_stage: Sequence[int],
        widths: Sequence[int],
        num_classes: int,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if len(blocks_per_stage) != len(widths) or not widths:
            raise ValueError(
                f"blocks_per_stage {tuple(blocks_per_stage)} and widths {tuple(widths)} must be "
                "non-empty and of equal length"
            )
        for count in blocks_per_stage:
            check_int("blocks per stage", count, low=1)
        for width in widths:
            check_int("stage width", width, low=1)
        num_classes = check_int("num_classes", num_classes, low=1)
        in_channels = check_int("in_channels", in_channels, low=1)

        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, 1, padding=1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        )
        stages = []
        channels = widths[0]
        for index, (count, width) in enumerate(zip(blocks_per_stage, widths, strict=True)):
            blocks = []
            for block_index in range(count):
                stride = 2 if index > 0 and block_index == 0 else 1
                blocks.append(BasicBlock(channels, width, stride))
                channels = width
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.head = nn.Linear(channels, num_classes)
        init_conv_bn_(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's feature map, before pooling."""
        return self.stages(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.adaptive_avg_pool2d(self.forward_features(x), 1)
        return self.head(torch.flatten(pooled, 1))


def resnet18(num_classes: int, in_channels: int = 3) -> CifarResNet:
    """CIFAR ResNet-18: BasicBlocks [2, 2, 2, 2], widths 64/128/256/512."""
    return CifarResNet((2, 2, 2, 2), (64, 128, 256, 512), num_classes, in_channels)


def resnet34(num_classes: int, in_channels: int = 3) -> CifarResNet:
    """CIFAR ResNet-34: BasicBlocks [3, 4, 6, 3], widths 64/128/256/512."""
    return CifarResNet((3, 4, 6, 3), (64, 128, 256, 512), num_classes, in_channels)


def _he_cifar_resnet(blocks: int, num_classes: int, in_channels: int) -> CifarResNet:
    return CifarResNet((blocks,) * 3, (16, 32, 64), num_classes, in_channels)


def resnet20(num_classes: int, in_channels: int = 3) -> CifarResNet:
    """He et al. 2016 ResNet-20 (n=3), widths 16/32/64, option-B (1x1 conv + BN) shortcuts."""
    return _he_cifar_resnet(3, num_classes, in_channels)


def resnet8(num_classes: int, in_channels: int = 3) -> CifarResNet:
    """He et al. 2016 ResNet-8 (n=1), widths 16/32/64, option-B (1x1 conv + BN) shortcuts."""
    return _he_cifar_resnet(1, num_classes, in_channels)
