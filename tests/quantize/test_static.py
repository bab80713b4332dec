"""Static int8 through torch.ao FX: BN folded, ReLU fused, plain-tensor state, exact reload."""

import pytest
import torch
from torch import nn

from prunekit.errors import PrunekitError
from prunekit.quantize import Int8StaticConfig, StaticInt8Region, quantize_
from prunekit.quantize.grid import sqnr_db
from prunekit.surgery import swaps
from tests.zoo import build


@torch.no_grad()
def _outputs(model, batches):
    model.eval()
    return torch.cat([model(x) for x, _ in batches])


@pytest.mark.parametrize("zoo", ["cnn-bn", "residual", "mlp", "grouped-concat"])
def test_static_int8_contract(zoo):
    model, batches = build(zoo)
    dense = _outputs(model, batches)
    report = quantize_(model, Int8StaticConfig(num_samples=32), data=batches)
    out = _outputs(model, batches)
    assert sqnr_db(dense, out) > 20
    assert all(r.bits == 8 and r.bytes_after < r.bytes_before for r in report.layers)
    state = model.state_dict()
    assert not any(v.is_quantized for v in state.values())

    fresh, _ = build(zoo, seed=1)
    swaps.replay_swaps_(fresh, swaps.swap_record(model))
    fresh.load_state_dict(state)
    assert torch.equal(_outputs(fresh, batches), out)


def test_batchnorm_folded_and_relu_fused():
    model, batches = build("cnn-bn")
    quantize_(model, Int8StaticConfig(num_samples=16), data=batches)
    assert isinstance(model.features, StaticInt8Region)
    kinds = {type(m).__name__ for m in model.features.graph.modules()}
    assert "ConvReLU2d" in kinds
    assert not any("BatchNorm" in k for k in kinds)
    # Counting reads the region's weights as one vector: both convs', BN folded in.
    assert model.features.weight.shape == (8 * 1 * 9 + 16 * 8 * 9,)
    assert model.features.bias.shape == (8 + 16,)


@pytest.mark.parametrize("repaired", [False, True], ids=["plain", "repaired"])
def test_ignore_keeps_a_conv_as_it_was_and_targets_pick_regions(repaired):
    # features.3 is a Conv+BN+ReLU: torch fuses such a chain by type, ignored or not.
    model, batches = build("cnn-bn")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fields = (
        {"equalize": True, "rounding": "adaround", "rounding_iterations": 5} if repaired else {}
    )
    config = Int8StaticConfig(targets=["features"], ignore=["features.3"], num_samples=32, **fields)
    report = quantize_(model, config, data=batches)
    assert [r.name for r in report.layers] == ["features"]
    assert type(model.head) is nn.Linear
    assert "features.3" in report.skipped
    graph = dict(model.features.graph.named_children())
    assert type(graph["3"]) is nn.Conv2d  # same name, not fused with its ReLU
    assert isinstance(graph["4"], torch.ao.nn.quantized.BatchNorm2d)  # its BN not folded in
    assert "ConvReLU2d" in type(graph["0"]).__name__  # the other conv still fused
    state = model.state_dict()
    for key in ("features.3.weight", "features.3.bias", "features.4.running_var"):
        assert torch.equal(state[key], before[key]), key
    out = _outputs(model, batches)
    fresh, _ = build("cnn-bn", seed=1)
    swaps.replay_swaps_(fresh, swaps.swap_record(model))
    fresh.load_state_dict(state)
    assert torch.equal(_outputs(fresh, batches), out)


class _Branchy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        h = self.conv(x)
        if h.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
            h = h * 2
        return h


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = _Branchy()
        self.fc = nn.Linear(4 * 6 * 6, 10)

    def forward(self, x):
        return self.fc(self.body(x).flatten(1))


def test_untraceable_region_is_a_clear_error_and_model_untouched():
    torch.manual_seed(0)
    model = _Net().eval()
    x = torch.randn(4, 1, 8, 8)
    before = model(x)
    with pytest.raises(PrunekitError, match="targets: region 'body'"):
        quantize_(model, Int8StaticConfig(), data=[x])
    assert swaps.swap_record(model) == []
    assert type(model.body) is _Branchy and type(model.fc) is nn.Linear
    assert torch.equal(model(x), before)


def test_static_needs_data():
    model, _ = build("cnn-bn")
    with pytest.raises(PrunekitError, match="data"):
        quantize_(model, Int8StaticConfig())
