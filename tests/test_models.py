"""Tests of the models package: registry, exact sizes, shapes, memory formats, compile, grads."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from models import MODEL_NAMES, build_model, count_parameters
from models.wide_resnet import WideResNet

CIFAR_MODELS = ("resnet8", "resnet20", "resnet18", "resnet34", "wrn16_4", "wrn28_10", "wrn40_10")
IMAGENET_MODELS = ("resnet18_imagenet", "resnet50_imagenet")
LARGE_MODELS = ("resnet34", "wrn28_10", "wrn40_10")  # seconds per CPU forward: real run is slow


def _meta_model(name: str, num_classes: int, **options) -> nn.Module:
    with torch.device("meta"):
        return build_model(name, num_classes, **options)


def _he_resnet_reference_count(n: int, num_classes: int) -> int:
    """Parameters of He et al.'s ResNet-(6n+2) with option-B shortcuts, counted by hand."""

    def conv(cin: int, cout: int, k: int) -> int:
        return cin * cout * k * k

    def bn(c: int) -> int:
        return 2 * c

    total = conv(3, 16, 3) + bn(16)
    cin = 16
    for width in (16, 32, 64):
        for _ in range(n):
            total += conv(cin, width, 3) + bn(width) + conv(width, width, 3) + bn(width)
            if cin != width:
                total += conv(cin, width, 1) + bn(width)
            cin = width
    return total + 64 * num_classes + num_classes


def test_model_names_are_their_builders_names():
    from models.registry import MODELS

    assert MODEL_NAMES == tuple(builder.__name__ for builder in MODELS)
    assert set(CIFAR_MODELS + IMAGENET_MODELS) <= set(MODEL_NAMES)


@pytest.mark.parametrize(
    ("name", "num_classes", "options", "expected"),
    [
        ("resnet18", 10, {}, 11_173_962),
        ("resnet34", 100, {}, 21_328_292),
        ("wrn28_10", 10, {}, 36_479_194),
        ("wrn40_10", 100, {}, 55_899_444),
        ("wrn", 10, {"depth": 28, "widen_factor": 10}, 36_479_194),
        ("wrn", 100, {"depth": 40, "widen_factor": 10, "dropout": 0.3}, 55_899_444),
        ("resnet18_imagenet", 1000, {}, 11_689_512),
        ("resnet50_imagenet", 1000, {}, 25_557_032),
        ("resnet8", 10, {}, _he_resnet_reference_count(1, 10)),
        ("resnet20", 10, {}, _he_resnet_reference_count(3, 10)),
        ("resnet20", 100, {}, _he_resnet_reference_count(3, 100)),
    ],
)
def test_exact_parameter_counts(name, num_classes, options, expected):
    assert count_parameters(_meta_model(name, num_classes, **options)) == expected


def test_reference_count_matches_known_resnet20_size():
    # He et al. report ~0.27M for ResNet-20 (option A); option B adds the two 1x1 projections.
    assert _he_resnet_reference_count(3, 10) == 272_474


def test_count_parameters_skips_frozen_parameters():
    model = build_model("resnet8", 10)
    total = count_parameters(model)
    model.head.weight.requires_grad_(False)
    assert count_parameters(model) == total - model.head.weight.numel()


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.slow) if n in LARGE_MODELS else n for n in CIFAR_MODELS],
)
def test_cifar_output_shape(name):
    torch.manual_seed(0)
    model = build_model(name, 7).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 7)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", CIFAR_MODELS)
def test_cifar_output_shape_on_meta(name):
    model = _meta_model(name, 13).eval()
    assert model(torch.empty(2, 3, 32, 32, device="meta")).shape == (2, 13)


@pytest.mark.parametrize("name", IMAGENET_MODELS)
def test_imagenet_output_shape_on_small_input(name):
    torch.manual_seed(0)
    model = build_model(name, 5).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 64, 64))
    assert logits.shape == (2, 5)


@pytest.mark.parametrize("name", ["resnet8", "resnet20"])
def test_small_resnets_accept_16x16_and_one_channel(name):
    torch.manual_seed(0)
    model = build_model(name, 4).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 16, 16)).shape == (2, 4)
        grey = build_model(name, 4, in_channels=1).eval()
        assert grey(torch.randn(2, 1, 16, 16)).shape == (2, 4)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("resnet18", (2, 512, 4, 4)),  # stride-1 stem, no max-pool, strides 1/2/2/2
        ("resnet8", (2, 64, 8, 8)),  # strides 1/2/2
        ("wrn16_4", (2, 256, 8, 8)),  # widths 16k/32k/64k, strides 1/2/2
    ],
)
def test_feature_map_resolution(name, expected):
    model = _meta_model(name, 10)
    assert model.forward_features(torch.empty(2, 3, 32, 32, device="meta")).shape == expected


def test_cifar_resnet_is_post_activation_and_projects_only_on_shape_change():
    model = build_model("resnet18", 10)
    first_stage, second_stage = model.stages[0], model.stages[1]
    assert isinstance(first_stage[0].shortcut, nn.Identity)
    projection = second_stage[0].shortcut
    assert isinstance(projection[0], nn.Conv2d) and projection[0].kernel_size == (1, 1)
    assert projection[0].stride == (2, 2) and isinstance(projection[1], nn.BatchNorm2d)
    assert isinstance(second_stage[1].shortcut, nn.Identity)
    # Post-activation: the block output has passed through a ReLU.
    out = first_stage[0](torch.randn(2, 64, 8, 8))
    assert (out >= 0).all()


def test_wrn_is_pre_activation_with_bias_free_convs():
    model = build_model("wrn", 10, depth=10, widen_factor=2)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(conv.bias is None for conv in convs)
    # Pre-activation: a block's output is a raw sum, so it has negative entries.
    out = model.stages[0][0](torch.randn(2, 16, 8, 8))
    assert (out < 0).any()


def test_initialisation():
    torch.manual_seed(0)
    model = build_model("wrn16_4", 10)
    conv = model.stages[1][0].conv1  # 64 -> 128 channels, so fan_out differs from fan_in
    fan_out = conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2.0 / fan_out), rel=0.02)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            assert torch.all(module.weight == 1) and torch.all(module.bias == 0)
    bound = 1 / math.sqrt(model.head.in_features)  # torch's default Linear init
    assert model.head.weight.abs().max().item() <= bound
    assert model.head.bias.abs().max().item() > 0


@pytest.mark.parametrize(
    ("name", "options"),
    [("resnet8", {}), ("wrn", {"depth": 10, "widen_factor": 2}), ("wrn16_4", {})],
)
def test_channels_last_matches_contiguous(name, options):
    torch.manual_seed(0)
    model = build_model(name, 10, **options).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
        model_cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
        conv_weight = next(m for m in model_cl.modules() if isinstance(m, nn.Conv2d)).weight
        assert conv_weight.is_contiguous(memory_format=torch.channels_last)
        actual = model_cl(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_torch_compile_matches_eager():
    torch.manual_seed(0)
    model = build_model("resnet8", 10).eval()
    x = torch.randn(2, 3, 32, 32)
    compiled = torch.compile(model)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("resnet8", {}),
        ("resnet20", {}),
        ("wrn", {"depth": 10, "widen_factor": 1, "dropout": 0.3}),
        ("wrn16_4", {}),
    ],
)
def test_backward_gives_finite_gradients_for_every_parameter(name, options):
    torch.manual_seed(0)
    model = build_model(name, 10, **options).train()
    x = torch.randn(4, 3, 32, 32)
    loss = nn.functional.cross_entropy(model(x), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    for param_name, parameter in model.named_parameters():
        assert parameter.grad is not None, param_name
        assert torch.isfinite(parameter.grad).all(), param_name
        assert parameter.grad.abs().sum() > 0, param_name


def test_dropout_is_active_only_in_training():
    torch.manual_seed(0)
    model = build_model("wrn", 10, depth=10, widen_factor=1, dropout=0.5)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert not torch.equal(model.train()(x), model(x))
        model.eval()
        torch.testing.assert_close(model(x), model(x), rtol=0, atol=0)


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="resnet101") as excinfo:
        build_model("resnet101", 10)
    assert all(name in str(excinfo.value) for name in MODEL_NAMES)


@pytest.mark.parametrize(
    ("name", "num_classes", "options", "fragments"),
    [
        ("wrn", 10, {"depth": 27, "widen_factor": 2}, ["27", "6n+4"]),
        ("wrn", 10, {"depth": 4, "widen_factor": 2}, ["4", "6n+4"]),
        ("wrn", 10, {"depth": 16, "widen_factor": 0}, ["widen_factor=0", "1 <= widen_factor"]),
        (
            "wrn",
            10,
            {"depth": 16, "widen_factor": 4, "dropout": 1.0},
            ["dropout=1.0", "0.0 <= dropout < 1.0"],
        ),
        ("wrn16_4", 10, {"dropout": -0.1}, ["dropout=-0.1", "0.0 <= dropout < 1.0"]),
        ("wrn", 10, {"depth": 16.0, "widen_factor": 4}, ["depth=16.0", "expected an int"]),
        ("wrn", 10, {"widen_factor": 4}, ["needs", "depth"]),
        ("wrn28_10", 10, {"depth": 16}, ["depth", "valid options are ['dropout', 'in_channels']"]),
        ("resnet18", 10, {"width": 2}, ["width", "valid options are ['in_channels']"]),
        ("resnet50_imagenet", 10, {"dropout": 0.1}, ["dropout", "valid options are []"]),
        ("resnet8", 10, {"in_channels": 0}, ["in_channels", "0"]),
        ("resnet8", 0, {}, ["num_classes=0", "1 <= num_classes"]),
        ("resnet18_imagenet", -3, {}, ["num_classes", "-3"]),
        ("resnet8", True, {}, ["num_classes", "True"]),
    ],
)
def test_bad_options_raise_value_error(name, num_classes, options, fragments):
    with pytest.raises(ValueError) as excinfo:
        build_model(name, num_classes, **options)
    message = str(excinfo.value)
    assert all(fragment in message for fragment in fragments), message


def test_wide_resnet_class_validates_on_its_own():
    with pytest.raises(ValueError, match="6n\\+4"):
        WideResNet(depth=12, widen_factor=1, num_classes=10)
