"""Every model of the suite, built by name: ``build_model(name, num_classes, **options)``.

A model is a builder function in this package, listed in ``MODELS``; its name is the model's
name (``model=<name>``, ``conf/model/<name>.yaml``) and its keyword parameters after
``num_classes`` are the model's options (``model.<option>=...``), with the builder's defaults.
Adding a model is its builder, its line here and its YAML (docs/adding-a-model.md).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from autodrop.checks import call_with_options, check_choice, check_int
from models.cifar_resnet import resnet8, resnet18, resnet20, resnet34
from models.imagenet_resnet import resnet18_imagenet, resnet50_imagenet
from models.wide_resnet import wrn, wrn16_4, wrn28_10, wrn40_10

#: Every model, in the order --help lists them.
MODELS = (
    resnet18,
    resnet34,
    resnet20,
    resnet8,
    wrn,
    wrn28_10,
    wrn40_10,
    wrn16_4,
    resnet18_imagenet,
    resnet50_imagenet,
)

_BUILDERS = {builder.__name__: builder for builder in MODELS}
MODEL_NAMES: tuple[str, ...] = tuple(_BUILDERS)


def build_model(name: str, num_classes: int, **options: Any) -> nn.Module:
    """Model ``name`` (one of MODEL_NAMES) with a ``num_classes``-way linear head; ``options``
    are its builder's keyword options. Anything invalid raises ValueError naming the value and
    the valid choices."""
    builder = _BUILDERS[check_choice("model", name, MODEL_NAMES)]
    num_classes = check_int("num_classes", num_classes, low=1)
    return call_with_options("model", name, builder, {"num_classes": num_classes}, options)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameter elements in ``model``."""
    return sum(parameter.numel() for parameter in model.parameters() if parameter.requires_grad)
