"""KMeansConfig.layer_bits: each layer shared at its own width, stored and reloaded at it."""

import pydantic
import pytest
import torch
from torch import nn

import prunekit as pk
from prunekit.artifact.io import artifact_bytes
from prunekit.errors import PrunekitError
from prunekit.models.lenet import LeNet5


def _lenet5():
    torch.manual_seed(0)
    model = LeNet5().eval()
    pk.prune_(model, pk.MagnitudeConfig(sparsity=0.9, scope="global"))
    return model


def _distinct_nonzeros(layer):
    w = layer.weight.detach()
    return w[w != 0].unique().numel()


def test_each_layer_gets_its_own_bits_and_at_most_that_many_values():
    model = _lenet5()
    table = {"fc1": 2, "re:^conv": 6}
    report = pk.share_weights_(model, pk.KMeansConfig(bits=4, conv_bits=8, layer_bits=table))
    assert report.bits == {"conv1": 6, "conv2": 6, "fc1": 2, "fc2": 4}
    for name, bits in report.bits.items():
        layer = model.get_submodule(name)
        assert layer.bits == bits
        assert 2 <= _distinct_nonzeros(layer) <= 2**bits


def test_first_matching_selector_wins_and_beats_conv_bits():
    model = _lenet5()
    table = {"conv2": 3, "re:conv": 5, "Linear": 7}
    report = pk.share_weights_(model, pk.KMeansConfig(bits=2, conv_bits=8, layer_bits=table))
    assert report.bits == {"conv1": 5, "conv2": 3, "fc1": 7, "fc2": 7}


def test_save_load_identical_and_smaller_than_uniform_bits(tmp_path):
    x = torch.randn(16, 1, 28, 28)
    uniform, mixed = _lenet5(), _lenet5()
    pk.share_weights_(uniform, pk.KMeansConfig(bits=5))
    pk.share_weights_(mixed, pk.KMeansConfig(bits=5, layer_bits={"fc1": 2}))
    pk.save(uniform, tmp_path / "uniform")
    pk.save(mixed, tmp_path / "mixed")
    reloaded = pk.load(tmp_path / "mixed")
    assert reloaded.fc1.bits == 2 and reloaded.fc2.bits == 5
    with torch.no_grad():
        assert torch.equal(reloaded(x), mixed(x))
    assert artifact_bytes(tmp_path / "mixed") < artifact_bytes(tmp_path / "uniform")


@pytest.mark.parametrize("bits", [0, 9, -1])
def test_bits_outside_the_format_name_field_value_and_fix(bits):
    with pytest.raises(pydantic.ValidationError, match=rf"layer_bits\['fc1'\].*1\.\.8.*got {bits}"):
        pk.KMeansConfig(layer_bits={"fc1": bits})


def test_a_bad_regex_is_refused_by_the_config():
    with pytest.raises(pydantic.ValidationError, match="not a valid regular expression"):
        pk.KMeansConfig(layer_bits={"re:fc(": 3})


def test_a_selector_matching_no_layer_is_an_error_and_changes_nothing():
    model = _lenet5()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(PrunekitError, match="layer_bits: 'fc9' matches no layer"):
        pk.share_weights_(model, pk.KMeansConfig(layer_bits={"fc9": 3}))
    assert all(isinstance(m, nn.Linear | nn.Conv2d) for m in (model.fc1, model.conv1))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_layer_bits_round_trip_through_a_recipe(tmp_path):
    recipe = pk.Recipe.from_yaml(
        "steps:\n  - share: {method: kmeans, bits: 4, layer_bits: {fc1: 2, 're:^conv': 6}}\n"
    )
    assert pk.Recipe.from_dict(recipe.to_dict()).to_dict() == recipe.to_dict()
    batches = [(torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,)))]
    report = pk.run_recipe(recipe, _lenet5(), batches, out=tmp_path / "run", progress=False)
    bits = {n: report.model.get_submodule(n).bits for n in ("conv1", "conv2", "fc1", "fc2")}
    assert bits == {"conv1": 6, "conv2": 6, "fc1": 2, "fc2": 4}


def test_a_recipe_with_bad_bits_is_refused_in_one_line_before_any_step():
    with pytest.raises(pk.RecipeError, match=r"^step 1 \(share.*layer_bits\['fc1'\].*got 9[^\n]*$"):
        pk.Recipe.from_yaml("steps:\n  - share: {method: kmeans, layer_bits: {fc1: 9}}\n")
