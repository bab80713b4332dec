"""Every registered model builds, fits its dataset, and has the published size."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prunekit.data import datasets, load_data
from prunekit.errors import PrunekitError
from prunekit.models import available, build, model_info

# The image classifiers; the language models have their own tests (test_gpt_tiny.py, …).
NAMES = [name for name in available() if model_info(name).task == "classification"]


def test_the_documented_builtins_are_registered() -> None:
    assert {"lenet300", "lenet5", "vgg-bn", "digits-cnn"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_builds_and_maps_its_input_shape_to_logits(name: str) -> None:
    info = model_info(name)
    assert info.dataset in datasets()
    torch.manual_seed(0)
    model = build(name).eval()
    out = model(torch.randn(3, *info.input_shape))
    assert out.shape == (3, info.num_classes)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", NAMES)
def test_matches_its_dataset(name: str) -> None:
    info = model_info(name)
    data = load_data(info.dataset)
    assert data.input_shape == info.input_shape and data.num_classes == info.num_classes
    x, _ = next(iter(data.loader("test", batch_size=4)))
    assert build(name).eval()(x).shape == (4, info.num_classes)


@pytest.mark.parametrize("name", NAMES)
def test_num_classes_and_in_channels_are_honoured(name: str) -> None:
    info = model_info(name)
    out = build(name, num_classes=3).eval()(torch.randn(2, *info.input_shape))
    assert out.shape == (2, 3)


def weight_count(model: nn.Module) -> tuple[int, int]:
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    weights = sum(m.weight.numel() for m in layers)
    biases = sum(m.bias.numel() for m in layers if m.bias is not None)
    return weights, biases


def test_lenet5_has_the_caffe_weight_count() -> None:
    # 20·1·5·5 + 50·20·5·5 + 800·500 + 500·10
    assert weight_count(build("lenet5")) == (430_500, 20 + 50 + 500 + 10)


def test_lenet300_has_the_published_weight_count() -> None:
    # 784·300 + 300·100 + 100·10
    assert weight_count(build("lenet300")) == (266_200, 300 + 100 + 10)


def macs(model: nn.Module, x: torch.Tensor) -> int:
    total = 0

    def count(module: nn.Module, _: tuple, out: torch.Tensor) -> None:
        nonlocal total
        # one multiply-accumulate per weight per output position
        positions = out[0, 0].numel() if isinstance(module, nn.Conv2d) else 1
        total += module.weight.numel() * positions

    hooks = [
        m.register_forward_hook(count)
        for m in model.modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    with torch.no_grad():
        model.eval()(x)
    for hook in hooks:
        hook.remove()
    return total


def test_vgg_bn_stays_cheap_enough_to_train_on_cpu() -> None:
    assert 10e6 < macs(build("vgg-bn"), torch.randn(1, 1, 28, 28)) <= 30e6


def test_unknown_name_lists_the_available_ones() -> None:
    with pytest.raises(PrunekitError) as err:
        build("resnet50")
    for name in NAMES:
        assert name in str(err.value)


def test_bad_keyword_is_a_prunekit_error() -> None:
    with pytest.raises(PrunekitError, match="width"):
        build("lenet5", width=2)


def test_mobilenet_v2_is_depthwise_heavy_and_cheap() -> None:
    model = build("mobilenet-v2")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    depthwise = [m for m in convs if m.groups == m.in_channels == m.out_channels > 1]
    assert len(depthwise) == 7 and len(convs) == 22  # one per inverted residual block
    assert sum(getattr(m, "residual", False) for m in model.modules()) == 4
    assert 2e6 < macs(model, torch.randn(1, 1, 28, 28)) <= 6e6
