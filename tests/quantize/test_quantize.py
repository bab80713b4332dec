"""The quantize_ contract, for every registered linear-layer method on every zoo model."""

import json

import pydantic
import pytest
import torch
from torch import nn

import prunekit as pk
from prunekit.errors import PrunekitError
from prunekit.quantize import (
    GPTQConfig,
    Int8DynamicConfig,
    Int8Linear,
    QATConfig,
    QuantizeReport,
    RTNConfig,
    WeightOnlyLinear,
    convert_,
    quantize_,
)
from prunekit.quantize.grid import sqnr_db, unpack_codes
from prunekit.surgery import swaps
from tests import hf_zoo
from tests.fuzzing.engine import memory_bound
from tests.zoo import ZOO, build

CONFIGS = {
    "int8-dynamic": Int8DynamicConfig(min_features=0),
    "rtn-4": RTNConfig(bits=4, group_size=16),
    "rtn-3-asym": RTNConfig(bits=3, group_size=-1, symmetric=False),
    "gptq-4": GPTQConfig(bits=4, group_size=16, num_samples=32),
    "gptq-3-act-order": GPTQConfig(bits=3, group_size=-1, act_order=True, num_samples=32),
    "qat": QATConfig(),
}
# Output SQNR (dB) each must reach on every zoo model; int8 is near lossless, 3 bits is not.
MIN_SQNR = {
    "int8-dynamic": 25,
    "rtn-4": 12,
    "rtn-3-asym": 5,
    "gptq-4": 12,
    "gptq-3-act-order": 5,
    "qat": 25,
}


def _quantized(model):
    return {
        n: m
        for n, m in model.named_modules()
        if isinstance(
            m, (Int8Linear, WeightOnlyLinear, pk.quantize.QATLinear, pk.quantize.QATConv2d)
        )
    }


@torch.no_grad()
def _outputs(model, batches):
    model.eval()
    return torch.cat([model(x) for x, _ in batches])


@pytest.mark.parametrize("zoo", list(ZOO))
@pytest.mark.parametrize("key", list(CONFIGS))
def test_contract(zoo, key):
    config = CONFIGS[key]
    model, batches = build(zoo)
    dense = _outputs(model, batches)
    report = quantize_(model, config, data=batches)
    out = _outputs(model, batches)
    assert out.shape == dense.shape and torch.isfinite(out).all()
    assert sqnr_db(dense, out) > MIN_SQNR[key]
    layers = _quantized(model)
    assert set(layers) == {r.name for r in report.layers}
    bits = getattr(config, "bits", 8)
    for layer in layers.values():
        if isinstance(layer, WeightOnlyLinear):
            assert layer.bits == bits
            assert int(unpack_codes(layer.codes, bits, layer.in_features).max()) < 2**bits
        if isinstance(layer, Int8Linear):
            assert layer.qweight.dtype == torch.int8
    json.dumps(report.to_dict())
    assert config.method in str(report)

    # The swaps replay on a freshly built model, which then loads the tensors exactly.
    fresh, _ = build(zoo, seed=1)
    swaps.replay_swaps_(fresh, swaps.swap_record(model))
    fresh.load_state_dict(model.state_dict())
    assert torch.equal(_outputs(fresh, batches), out)


@pytest.mark.parametrize("key", ["int8-dynamic", "rtn-4", "gptq-4", "qat"])
def test_pruned_weights_stay_zero(key):
    model, batches = build("attention")
    pk.prune_(model, pk.MagnitudeConfig(sparsity=0.5))
    zeros = {
        n: m.weight.detach() == 0 for n, m in model.named_modules() if isinstance(m, nn.Linear)
    }
    quantize_(model, CONFIGS[key], data=batches)
    if key == "qat":
        pk.finetune_(model, batches, epochs=1, lr=1e-3, progress=False)
        convert_(model)
    for name, layer in _quantized(model).items():
        assert torch.all(layer.weight[zeros[name]] == 0), name


@pytest.mark.parametrize("key", list(CONFIGS))
def test_ignore_honoured(key):
    model, batches = build("attention")
    config = CONFIGS[key].model_copy(update={"ignore": ["head", "re:linear1"]})
    report = quantize_(model, config, data=batches)
    names = {r.name for r in report.layers}
    assert "head" not in names and "block.linear1" not in names
    assert type(model.head) is nn.Linear and type(model.block.linear1) is nn.Linear
    assert "embed" in names


@pytest.mark.parametrize(
    "make, field",
    [
        (lambda: RTNConfig(bits=9), "bits"),
        (lambda: RTNConfig(bits=1), "bits"),
        (lambda: RTNConfig(group_size=0), "group_size"),
        (lambda: GPTQConfig(dampening=0), "dampening"),
        (lambda: GPTQConfig(block_size=0), "block_size"),
        (lambda: GPTQConfig(num_samples=0), "num_samples"),
        (lambda: Int8DynamicConfig(min_features=-1), "min_features"),
        (lambda: QATConfig(activation_bits=4), "activation_bits"),
        (lambda: pk.quantize.Int8StaticConfig(sparsity=0.5), "sparsity"),
    ],
)
def test_bad_config_names_the_field(make, field):
    with pytest.raises(pydantic.ValidationError, match=field):
        make()


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _unchanged(model, state, modules):
    assert swaps.swap_record(model) == []
    assert [type(m) for m in model.modules()] == modules
    after = model.state_dict()
    assert after.keys() == state.keys()
    assert all(torch.equal(after[k], v) for k, v in state.items())


@pytest.mark.parametrize(
    "config, data, match",
    [
        (RTNConfig(targets=["nope"]), None, "targets"),
        (RTNConfig(targets=["head"]), None, "tie"),
        (GPTQConfig(), None, "data"),
        (Int8DynamicConfig(), None, "min_features"),
    ],
)
def test_bad_input_leaves_model_untouched(config, data, match):
    model, _ = build("tied-lm")
    state, modules = _state(model), [type(m) for m in model.modules()]
    with pytest.raises(PrunekitError, match=match):
        quantize_(model, config, data=data)
    _unchanged(model, state, modules)


def test_failure_half_way_swaps_everything_back(monkeypatch):
    model, inputs = hf_zoo.ZOO["llama_gqa"]()
    state, modules = _state(model), [type(m) for m in model.modules()]
    calls = []
    real = pk.quantize.calibrated.gptq_quantize

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) > 9:  # the second block
            raise RuntimeError("boom")
        return real(*args, **kwargs)

    monkeypatch.setattr(pk.quantize.calibrated, "gptq_quantize", failing)
    with pytest.raises(RuntimeError, match="boom"):
        quantize_(model, GPTQConfig(bits=4, group_size=16), data=[inputs])
    _unchanged(model, state, modules)


def test_quantize_needs_a_quantize_config():
    model, _ = build("mlp")
    with pytest.raises(TypeError, match="config"):
        quantize_(model, pk.MagnitudeConfig())


@pytest.mark.parametrize("name", ["llama_gqa", "roberta", "gpt2"])
def test_gptq_on_transformers_block_by_block(name):
    model, inputs = hf_zoo.ZOO[name]()
    with torch.no_grad():
        ref = pk.data.batches.run_model(model, inputs)
    report = quantize_(model, GPTQConfig(bits=4, group_size=16), data=[inputs, inputs])
    assert isinstance(report, QuantizeReport)
    names = [r.name for r in report.layers]
    assert names and all(".0." in n or ".1." in n for n in names)  # inside the blocks only
    with torch.no_grad():
        got = pk.data.batches.run_model(model, inputs)
    assert sqnr_db(ref, got) > 10


@pytest.mark.parametrize(
    "make",
    [lambda g: RTNConfig(bits=4, group_size=g), lambda g: GPTQConfig(group_size=g, num_samples=16)],
)
def test_a_group_size_beyond_the_layer_is_one_group(make):
    # Each group's scale was repeated group_size times: 32 x 2**31 floats for group_size=2**31.
    model, data = build("mlp")
    quantize_(model, make(-1), data=data)
    wide, _ = build("mlp")
    with memory_bound(512):
        quantize_(wide, make(2**31), data=data)
    assert torch.equal(_outputs(wide, data), _outputs(model, data))


@pytest.mark.parametrize("dampening", [1e300, float("inf")])
def test_a_dampening_too_large_to_invert_is_refused(dampening):
    # torch's _LinAlgError came through as it was.
    model, data = build("mlp")
    state, modules = _state(model), [type(m) for m in model.modules()]
    with pytest.raises(PrunekitError, match="dampening"):
        quantize_(model, GPTQConfig(dampening=dampening, num_samples=16), data=data)
    _unchanged(model, state, modules)
