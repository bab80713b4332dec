"""Int8Linear: torch's fbgemm kernel fed from plain tensors, equal to quantize_dynamic."""

import copy
import warnings

import pytest
import torch
from torch import nn

import prunekit as pk
from prunekit.errors import PrunekitError
from prunekit.quantize import Int8DynamicConfig, Int8Linear, quantize_
from tests import hf_zoo


def _mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(256, 384), nn.ReLU(), nn.Linear(384, 256)).eval()


def _torch_dynamic(model):
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return quantize_dynamic(copy.deepcopy(model), {nn.Linear: per_channel_dynamic_qconfig})


def test_matches_torch_quantize_dynamic(monkeypatch):
    # torch always quantizes activations to 7 bits on x86; prunekit uses 8 where VNNI allows.
    monkeypatch.setattr(Int8Linear, "reduce_range", True)
    model = _mlp()
    x = torch.randn(7, 5, 256, generator=torch.Generator().manual_seed(1))
    ref = _torch_dynamic(model)
    report = quantize_(model, Int8DynamicConfig())
    assert [r.name for r in report.layers] == ["0", "2"]
    assert isinstance(model[0], Int8Linear)
    assert torch.equal(model[0].qweight, ref[0].weight().int_repr())
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), rtol=0, atol=1e-5)


def test_packed_weight_follows_the_state_tensors():
    model = _mlp()
    x = torch.randn(4, 256)
    quantize_(model, Int8DynamicConfig())
    other = _mlp(seed=1)
    quantize_(other, Int8DynamicConfig())
    with torch.no_grad():
        before, target = model(x), other(x)
        model.load_state_dict(other.state_dict())
        assert torch.equal(model(x), target)
        assert not torch.equal(before, target)
        copied = copy.deepcopy(model)
        assert torch.equal(copied(x), target)
        model[0].bias.zero_()
        assert not torch.equal(model(x), target)


def test_state_is_plain_tensors_and_weight_is_readable():
    model = _mlp()
    quantize_(model, Int8DynamicConfig())
    state = model.state_dict()
    assert {k: v.dtype for k, v in state.items() if k.startswith("0.")} == {
        "0.qweight": torch.int8,
        "0.scale": torch.float32,
        "0.bias": torch.float32,
    }
    assert not any(v.is_quantized for v in state.values())
    assert model[0].weight.shape == (384, 256)


def test_min_features_skips_small_layers():
    model = nn.Sequential(nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
    report = quantize_(model, Int8DynamicConfig(min_features=128))
    assert isinstance(model[0], Int8Linear) and isinstance(model[2], nn.Linear)
    assert "min_features=128" in report.skipped["2"]
    tiny = nn.Sequential(nn.Linear(8, 8))
    with pytest.raises(PrunekitError, match="min_features"):
        quantize_(tiny, Int8DynamicConfig())
    assert isinstance(tiny[0], nn.Linear)


def test_gpt2_conv1d_layers():
    model, inputs = hf_zoo.ZOO["gpt2"]()
    with torch.no_grad():
        ref = model(**inputs).logits
    report = quantize_(model, Int8DynamicConfig(min_features=0))
    kinds = {r.kind for r in report.layers}
    assert "Conv1D" in kinds
    assert "lm_head" in report.skipped  # tied to the embedding
    with torch.no_grad():
        got = model(**inputs).logits
    assert pk.quantize.grid.sqnr_db(ref, got) > 25


def test_activation_range_never_overflows_the_kernel():
    # Inputs at the top of the range times weights at the top of theirs: the worst case for
    # int16 pair sums; the activation range chosen for this CPU must still be exact.
    layer = nn.Linear(1024, 4, bias=False)
    with torch.no_grad():
        layer.weight.fill_(1.0)
    int8 = Int8Linear.from_layer(layer)
    with torch.no_grad():
        out = int8(torch.full((2, 1024), 10.0))
    torch.testing.assert_close(out, torch.full((2, 4), 10240.0 * 127 / 127.5), rtol=1e-5, atol=0)


def test_layer_without_bias():
    layer = nn.Linear(256, 256, bias=False)
    int8 = Int8Linear.from_layer(layer)
    assert int8.bias is None
    x = torch.randn(3, 256)
    with torch.no_grad():
        assert pk.quantize.grid.sqnr_db(layer(x), int8(x)) > 30
