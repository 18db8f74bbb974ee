"""torchvision's ImageNet ResNets, randomly initialised (no weights are ever downloaded)."""

from __future__ import annotations

from torchvision.models import ResNet
from torchvision.models import resnet18 as tv_resnet18
from torchvision.models import resnet50 as tv_resnet50

from autodrop.checks import check_int


def resnet18_imagenet(num_classes: int) -> ResNet:
    """torchvision ResNet-18 with ``weights=None``."""
    return tv_resnet18(weights=None, num_classes=check_int("num_classes", num_classes, low=1))


def resnet50_imagenet(num_classes: int) -> ResNet:
    """torchvision ResNet-50 with ``weights=None``."""
    return tv_resnet50(weights=None, num_classes=check_int("num_classes", num_classes, low=1))
