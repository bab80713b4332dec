"""Quantization-aware training: fake-quant layers train with finetune_, then convert."""

import pytest
import torch
from torch import nn

import prunekit as pk
from prunekit.errors import PrunekitError
from prunekit.quantize import (
    Int8Linear,
    QATConfig,
    QATConv2d,
    QATLinear,
    WeightOnlyLinear,
    convert_,
    prepare_qat_,
)
from prunekit.quantize.grid import fake_quant_per_channel
from prunekit.surgery import swaps
from tests.zoo import build, image_batches


@torch.no_grad()
def _accuracy(model, batches):
    model.eval()
    right = sum(int((model(x).argmax(1) == y).sum()) for x, y in batches)
    return right / sum(len(y) for _, y in batches)


def _trained_mlp():
    model, _ = build("mlp")
    train = image_batches(n=512, batch=32, seed=0)
    pk.finetune_(model, train, epochs=15, lr=1e-2, progress=False)
    return model, train, image_batches(n=256, batch=64, seed=1)


def test_qat_keeps_accuracy_and_converts_to_int8():
    model, train, val = _trained_mlp()
    dense = _accuracy(model, val)
    assert dense > 0.5  # chance is 0.1
    report = prepare_qat_(model, QATConfig())
    assert {r.name for r in report.layers} == {"net.1", "net.3"}
    assert all(isinstance(model.net[i], QATLinear) for i in (1, 3))
    pk.finetune_(model, train, epochs=2, lr=1e-3, progress=False)
    assert torch.isfinite(model.net[1].act_range).all()  # ranges were observed
    fake = _accuracy(model, val)
    with torch.no_grad():
        fake_out = model(val[0][0])
    convert_(model)
    assert all(isinstance(model.net[i], Int8Linear) for i in (1, 3))
    converted = _accuracy(model, val)
    assert fake >= dense - 0.03
    assert converted >= fake - 0.02
    with torch.no_grad():
        assert pk.quantize.grid.sqnr_db(fake_out, model(val[0][0])) > 25

    fresh, _ = build("mlp", seed=3)
    swaps.replay_swaps_(fresh, swaps.swap_record(model))
    fresh.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(fresh.eval()(val[0][0]), model(val[0][0]))


def test_low_bit_qat_converts_to_codes_on_the_trained_grid():
    model, batches = build("mlp")
    prepare_qat_(model, QATConfig(bits=4, activation_bits=None))
    pk.finetune_(model, batches, epochs=1, progress=False)
    grid = fake_quant_per_channel(model.net[1].weight.detach(), 4)
    convert_(model)
    layer = model.net[1]
    assert isinstance(layer, WeightOnlyLinear) and layer.bits == 4
    torch.testing.assert_close(layer.weight, grid, rtol=0, atol=1e-6)


def test_conv_converts_to_float_conv_on_the_int8_grid():
    model, batches = build("cnn-bn")
    prepare_qat_(model, QATConfig())
    assert isinstance(model.features[0], QATConv2d)
    pk.finetune_(model, batches, epochs=1, progress=False)
    grid = fake_quant_per_channel(model.features[0].weight.detach(), 8)
    convert_(model)
    conv = model.features[0]
    assert type(conv) is nn.Conv2d
    assert torch.equal(conv.weight.detach(), grid)
    assert isinstance(model.head, Int8Linear)


def test_prepare_twice_skips_prepared_layers_and_convert_needs_qat():
    model, _ = build("mlp")
    with pytest.raises(PrunekitError, match="QATConfig"):
        convert_(model)
    prepare_qat_(model, QATConfig())
    with pytest.raises(PrunekitError, match="already prepared"):
        prepare_qat_(model, QATConfig())
