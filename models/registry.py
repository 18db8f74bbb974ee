"""One entry point from a model name (as configs spell it) to a freshly built ``nn.Module``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from autodrop.checks import check_int
from models.cifar_resnet import resnet8, resnet18, resnet20, resnet34
from models.imagenet_resnet import resnet18_imagenet, resnet50_imagenet
from models.wide_resnet import WideResNet


@dataclass(frozen=True)
class _Entry:
    builder: Callable[..., nn.Module]
    options: frozenset[str]  # keyword options a caller may pass
    required: frozenset[str] = frozenset()
    preset: Mapping[str, Any] = field(default_factory=dict)  # options the name fixes


_CIFAR_OPTIONS = frozenset({"in_channels"})
_WRN_PRESET_OPTIONS = frozenset({"dropout", "in_channels"})

_REGISTRY: dict[str, _Entry] = {
    "resnet18": _Entry(resnet18, _CIFAR_OPTIONS),
    "resnet34": _Entry(resnet34, _CIFAR_OPTIONS),
    "resnet20": _Entry(resnet20, _CIFAR_OPTIONS),
    "resnet8": _Entry(resnet8, _CIFAR_OPTIONS),
    "wrn": _Entry(
        WideResNet,
        frozenset({"depth", "widen_factor", "dropout", "in_channels"}),
        required=frozenset({"depth", "widen_factor"}),
    ),
    "wrn28_10": _Entry(WideResNet, _WRN_PRESET_OPTIONS, preset={"depth": 28, "widen_factor": 10}),
    "wrn40_10": _Entry(WideResNet, _WRN_PRESET_OPTIONS, preset={"depth": 40, "widen_factor": 10}),
    "wrn16_4": _Entry(WideResNet, _WRN_PRESET_OPTIONS, preset={"depth": 16, "widen_factor": 4}),
    "resnet18_imagenet": _Entry(resnet18_imagenet, frozenset()),
    "resnet50_imagenet": _Entry(resnet50_imagenet, frozenset()),
}

MODEL_NAMES: tuple[str, ...] = tuple(_REGISTRY)


def _describe(names: frozenset[str]) -> str:
    return ", ".join(sorted(names)) if names else "none"


def build_model(name: str, num_classes: int, **options: Any) -> nn.Module:
    """Build model ``name`` (one of MODEL_NAMES) with a ``num_classes``-way linear head.

    ``options`` are the architecture's keyword options: ``wrn`` needs ``depth`` (6n+4) and
    ``widen_factor`` and takes ``dropout`` (in [0, 1), default 0); the WRN presets take
    ``dropout``; the CIFAR models take ``in_channels`` (default 3). Anything invalid raises
    ValueError naming the value and the valid choices.
    """
    entry = _REGISTRY.get(name)
    if entry is None:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(MODEL_NAMES)}")
    num_classes = check_int("num_classes", num_classes, low=1)
    unknown = set(options) - entry.options
    if unknown:
        raise ValueError(
            f"model {name!r} got unknown option(s) {_describe(frozenset(unknown))}; "
            f"valid options: {_describe(entry.options)}"
        )
    missing = entry.required - set(options)
    if missing:
        raise ValueError(
            f"model {name!r} needs option(s) {_describe(missing)}; "
            f"valid options: {_describe(entry.options)}"
        )
    return entry.builder(num_classes=num_classes, **entry.preset, **options)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameter elements in ``model``."""
    return sum(parameter.numel() for parameter in model.parameters() if parameter.requires_grad)
