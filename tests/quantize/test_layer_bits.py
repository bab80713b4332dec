"""WeightOnlyConfig.layer_bits (RTN, GPTQ): each layer quantized, stored and reloaded at its own
width."""

import pydantic
import pytest
import torch

import prunekit as pk
from prunekit.artifact.io import artifact_bytes
from prunekit.errors import PrunekitError
from prunekit.models.lenet import LeNet300

TABLE = {"fc1": 2, "re:^fc[23]$": 6}


def _mlp():
    torch.manual_seed(0)
    return LeNet300().eval()


def _calib():
    torch.manual_seed(1)
    return [(torch.randn(32, 1, 28, 28), torch.randint(0, 10, (32,))) for _ in range(2)]


def _configs(**fields):
    return [pk.RTNConfig(**fields), pk.GPTQConfig(num_samples=64, **fields)]


@pytest.mark.parametrize("config", _configs(bits=4, group_size=-1, layer_bits=TABLE), ids=str)
def test_each_layer_at_its_bits_with_at_most_that_many_values_per_row(config):
    model = _mlp()
    report = pk.quantize_(model, config, data=_calib())
    assert {r.name: r.bits for r in report.layers} == {"fc1": 2, "fc2": 6, "fc3": 6}
    for name, bits in (("fc1", 2), ("fc2", 6), ("fc3", 6)):
        layer = model.get_submodule(name)
        assert layer.bits == bits
        w = layer.weight
        assert max(row.unique().numel() for row in w) <= 2**bits
    # fc1 at 2 bits loses more than the 6-bit layers do.
    sqnr = {r.name: r.sqnr_db for r in report.layers}
    assert sqnr["fc1"] < sqnr["fc2"] and sqnr["fc1"] < sqnr["fc3"]


@pytest.mark.parametrize("cls", [pk.RTNConfig, pk.GPTQConfig])
def test_save_load_identical_and_smaller_than_uniform_bits(tmp_path, cls):
    x = torch.randn(8, 1, 28, 28)
    uniform, mixed = _mlp(), _mlp()
    pk.quantize_(uniform, cls(bits=6, group_size=64), data=_calib())
    pk.quantize_(mixed, cls(bits=6, group_size=64, layer_bits={"fc1": 3}), data=_calib())
    pk.save(uniform, tmp_path / "uniform")
    pk.save(mixed, tmp_path / "mixed")
    reloaded = pk.load(tmp_path / "mixed")
    assert (reloaded.fc1.bits, reloaded.fc2.bits) == (3, 6)
    with torch.no_grad():
        assert torch.equal(reloaded(x), mixed(x))
    assert artifact_bytes(tmp_path / "mixed") < artifact_bytes(tmp_path / "uniform")


@pytest.mark.parametrize("bits", [1, 9])
@pytest.mark.parametrize("cls", [pk.RTNConfig, pk.GPTQConfig])
def test_bits_outside_the_format_name_field_value_and_fix(cls, bits):
    with pytest.raises(pydantic.ValidationError, match=rf"layer_bits\['fc1'\].*2\.\.8.*got {bits}"):
        cls(layer_bits={"fc1": bits})


def test_a_selector_matching_no_layer_is_an_error_and_changes_nothing():
    model = _mlp()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(PrunekitError, match=r"layer_bits: 're:\^head' matches no layer"):
        pk.quantize_(model, pk.RTNConfig(layer_bits={"re:^head": 3}))
    assert isinstance(model.fc1, torch.nn.Linear)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
