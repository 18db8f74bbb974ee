"""The weight initialisation every model built here (torchvision's aside) uses."""

from __future__ import annotations

from torch import nn


def init_conv_bn_(model: nn.Module) -> None:
    """Kaiming-normal convs (fan_out, relu), BN weight 1 bias 0; linears keep torch's default."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
