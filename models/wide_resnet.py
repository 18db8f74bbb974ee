"""Wide residual networks WRN-d-k (Zagoruyko & Komodakis 2016) for 32x32 inputs."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from autodrop.checks import check_float, check_int
from models.weight_init import init_conv_bn_


class PreActBlock(nn.Module):
    """Pre-activation block: BN-ReLU-conv3x3-BN-ReLU-[dropout]-conv3x3, plus the shortcut.

    Dropout sits right before the second conv, where the WRN paper and its code put it. Where
    the shape changes, the shortcut is a bias-free 1x1 conv applied to the activated input
    (BN-ReLU is shared with the residual branch), as in the reference implementation.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=1, bias=False)
        self.projection: nn.Conv2d | None = None
        if stride != 1 or in_channels != out_channels:
            self.projection = nn.Conv2d(in_channels, out_channels, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = F.relu(self.bn1(x))
        shortcut = x if self.projection is None else self.projection(activated)
        out = self.conv1(activated)
        out = self.conv2(self.dropout(F.relu(self.bn2(out))))
        return out + shortcut


class WideResNet(nn.Module):
    """WRN-depth-widen_factor: 16-ch stem, three stages of widths 16k/32k/64k at strides 1/2/2."""

    def __init__(
        self,
        depth: int,
        widen_factor: int,
        num_classes: int,
        dropout: float = 0.0,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        depth = check_int("depth", depth, low=1)
        if depth < 10 or (depth - 4) % 6 != 0:
            raise ValueError(
                f"WRN depth must be 6n+4 with n >= 1 (10, 16, 22, 28, ...), got {depth}"
            )
        widen_factor = check_int("widen_factor", widen_factor, low=1)
        num_classes = check_int("num_classes", num_classes, low=1)
        dropout = check_float("dropout", dropout, low=0.0, high=1.0, high_open=True)
        in_channels = check_int("in_channels", in_channels, low=1)

        blocks_per_stage = (depth - 4) // 6
        self.stem = nn.Conv2d(in_channels, 16, 3, 1, padding=1, bias=False)
        stages = []
        channels = 16
        for index, width in enumerate((16 * widen_factor, 32 * widen_factor, 64 * widen_factor)):
            blocks = []
            for block_index in range(blocks_per_stage):
                stride = 2 if index > 0 and block_index == 0 else 1
                blocks.append(PreActBlock(channels, width, stride, dropout))
                channels = width
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.final_bn = nn.BatchNorm2d(channels)
        self.head = nn.Linear(channels, num_classes)
        init_conv_bn_(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The final BN-ReLU feature map, before pooling."""
        return F.relu(self.final_bn(self.stages(self.stem(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.adaptive_avg_pool2d(self.forward_features(x), 1)
        return self.head(torch.flatten(pooled, 1))


def wrn(
    num_classes: int, depth: int, widen_factor: int, dropout: float = 0.0, in_channels: int = 3
) -> WideResNet:
    """WRN-``depth``-``widen_factor`` (depth 6n+4), dropout before each block's second conv."""
    return WideResNet(depth, widen_factor, num_classes, dropout, in_channels)


def wrn16_4(num_classes: int, dropout: float = 0.0, in_channels: int = 3) -> WideResNet:
    """WRN-16-4."""
    return WideResNet(16, 4, num_classes, dropout, in_channels)


def wrn28_10(num_classes: int, dropout: float = 0.0, in_channels: int = 3) -> WideResNet:
    """WRN-28-10, the paper's CIFAR-10 wide network."""
    return WideResNet(28, 10, num_classes, dropout, in_channels)


def wrn40_10(num_classes: int, dropout: float = 0.0, in_channels: int = 3) -> WideResNet:
    """WRN-40-10, the paper's CIFAR-100 wide network."""
    return WideResNet(40, 10, num_classes, dropout, in_channels)
