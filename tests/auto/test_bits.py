"""search_bits: bits per layer under a size budget from measured per-layer sensitivity."""

import copy
import itertools
import json

import pydantic
import pytest
import torch
import yaml

import prunekit as pk
from prunekit.artifact.io import artifact_size
from prunekit.auto.bits import BitsPoint, BitsSearchConfig, allocate, search_bits
from prunekit.cli import main
from prunekit.errors import PrunekitError
from prunekit.measure.accuracy import top1_accuracy
from tests.auto.conftest import mlp


def _accuracy(val):
    return lambda model: 100 * top1_accuracy(model, val)[0]


@pytest.fixture(scope="module")
def pruned_mlp(digits_mlp):
    model = copy.deepcopy(digits_mlp)
    pk.prune_(model, pk.MagnitudeConfig(sparsity=0.6, scope="global"))
    return model.eval()


def test_allocate_is_the_exact_knapsack_optimum():
    torch.manual_seed(0)
    layers, widths = ["a", "b", "c"], [2, 3, 4, 5]
    points = [
        BitsPoint(n, b, 90.0 - float(torch.rand(()) * 8 / b), int(torch.randint(10, 40, ())) * b)
        for n in layers for b in widths
    ]  # fmt: skip
    at = {(p.layer, p.bits): p for p in points}
    budget = 250
    chosen = allocate(points, 90.0, budget)

    def total(combo, what):
        return sum(what(at[n, b]) for n, b in zip(layers, combo, strict=True))

    combos = itertools.product(widths, repeat=3)
    feasible = [c for c in combos if total(c, lambda p: p.delta_bytes) <= budget]
    best = min(feasible, key=lambda c: total(c, lambda p: 90.0 - p.metric))
    assert tuple(chosen[n] for n in layers) == best
    assert sum(at[n, b].delta_bytes for n, b in chosen.items()) <= budget


def test_allocate_refuses_a_budget_below_the_smallest_widths():
    points = [BitsPoint("a", 2, 1.0, 100), BitsPoint("a", 4, 1.0, 200)]
    with pytest.raises(PrunekitError, match=r"smallest widths tried change the size by \+100"):
        allocate(points, 1.0, 99)


@pytest.mark.parametrize("config", [pk.KMeansConfig(), pk.RTNConfig(group_size=32)], ids=str)
def test_the_chosen_bits_fit_the_budget_on_disk(pruned_mlp, digits, config):
    _, val, _ = digits
    state = {k: v.clone() for k, v in pruned_mlp.state_dict().items()}
    apply = pk.share_weights_ if isinstance(config, pk.KMeansConfig) else pk.quantize_
    sizes = []
    for bits in (2, 4):
        uniform = copy.deepcopy(pruned_mlp)
        apply(uniform, config.model_copy(update={"bits": bits}))
        sizes.append(artifact_size(uniform))
    budget = sum(sizes) // 2  # between every layer at 2 bits and every layer at 4
    search = BitsSearchConfig(max_bytes=budget, bits=(2, 6))
    report = search_bits(pruned_mlp, config, _accuracy(val), search, progress=False)
    assert all(torch.equal(v, state[k]) for k, v in pruned_mlp.state_dict().items())
    assert report.predicted_bytes <= budget
    assert set(report.layer_bits) == {"1", "3", "5"} and len(set(report.layer_bits.values())) > 1
    model = copy.deepcopy(pruned_mlp)
    apply(model, report.chosen)
    assert {n: model.get_submodule(n).bits for n in report.layer_bits} == report.layer_bits
    assert abs(artifact_size(model) - report.predicted_bytes) < 0.02 * budget
    assert artifact_size(model) <= budget


def test_one_budget_and_a_valid_bit_range_are_required():
    with pytest.raises(pydantic.ValidationError, match="exactly one size budget"):
        BitsSearchConfig()
    with pytest.raises(pydantic.ValidationError, match="exactly one size budget"):
        BitsSearchConfig(max_bytes=100, ratio=10.0)
    with pytest.raises(pydantic.ValidationError, match=r"bits must be \(low, high\).*got \(5, 3\)"):
        BitsSearchConfig(ratio=10.0, bits=(5, 3))


def test_rtn_cannot_search_one_bit(pruned_mlp):
    with pytest.raises(PrunekitError, match=r"rtn stores 2\.\.8 bits; got low=1"):
        search_bits(pruned_mlp, pk.RTNConfig(), float, BitsSearchConfig(ratio=8, bits=(1, 4)))


def test_cli_size_budget_writes_a_model_within_it_and_its_recipe(tmp_path, digits_mlp, capsys):
    from safetensors.torch import save_model

    (tmp_path / "net.py").write_text(
        "from tests.auto.conftest import mlp\n\ndef make():\n    return mlp()\n"
    )
    save_model(digits_mlp, str(tmp_path / "w.safetensors"))
    out = tmp_path / "run"
    code = main([
        "auto", "--model", f"py:{tmp_path / 'net.py'}:make", "--weights",
        str(tmp_path / "w.safetensors"), "--data", "digits", "--size-budget", "6x",
        "--bits-range", "2:6", "--final-epochs", "1", "--val-size", "0.2", "--out", str(out),
        "--json",
    ])  # fmt: skip
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["within_budget"] and printed["bytes"] <= printed["budget_bytes"]
    recipe = yaml.safe_load((out / "recipe.yaml").read_text())
    share = recipe["steps"][0]["share"]
    assert share["method"] == "kmeans" and share["layer_bits"] == printed["layer_bits"]
    pk.Recipe.from_dict(recipe)  # runnable as written
    reloaded = pk.load(out / "model", model=mlp())
    assert {n: reloaded.get_submodule(n).bits for n in share["layer_bits"]} == share["layer_bits"]


@pytest.mark.parametrize(
    ("args", "match"),
    [(["--size-budget", "small"], "--size-budget must be bytes"),
     (["--size-budget", "10x", "--bits-range", "2-8"], "--bits-range must be LOW:HIGH"),
     (["--size-budget", "10x", "--bits-method", "int4"], "--bits-method must be one of"),
     (["--size-budget", "10x", "--trials", "5", "--max-drop", "0.5"],
      "--max-drop, --trials have no effect with --size-budget; leave them out"),
     (["--bits-range", "2:4"], "--bits-range have no effect without --size-budget")],
)  # fmt: skip
def test_cli_bad_budget_options_exit_2_with_one_line(tmp_path, capsys, args, match):
    code = main(["auto", "--model", "builtin:lenet300", "--out", str(tmp_path / "o"), *args])
    assert code == 2
    assert match in capsys.readouterr().err
