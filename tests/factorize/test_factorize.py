"""factorize_: accuracy kept on a trained model, exact ranks, reconstruction at full rank,
skipped layers, save/load, fine-tuning the factors, refusals that leave the model as it was."""

import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import prunekit as pk
from prunekit.factorize import (
    LowRankConv2d,
    LowRankLayer,
    LowRankLinear,
    choose_rank,
    factorize_,
    spectrum,
)
from prunekit.factorize import api as factorize_api
from prunekit.factorize.layers import low_rank_like
from prunekit.surgery import swaps
from tests import zoo
from tests.factorize.helpers import accuracy as _accuracy
from tests.factorize.helpers import same as _same
from tests.factorize.helpers import state as _state


def _classes(model):
    return {n: type(m) for n, m in model.named_modules()}


@torch.no_grad()
def _loss(model, loader):
    model.eval()
    losses = [float(F.cross_entropy(model(x), y)) for x, y in loader]
    return sum(losses) / len(losses)


def _params(model):
    return sum(p.numel() for p in model.parameters())


def _low_rank(model):
    return {n: m for n, m in model.named_modules() if isinstance(m, LowRankLayer)}


# --------------------------------------------------------------------------- on a trained model


def test_energy_keeps_accuracy_and_shrinks_the_factorized_layers(trained, digits):
    model = trained()
    test = digits.loader("test", batch_size=512)
    before_acc, before_params = _accuracy(model, test), _params(model)
    report = factorize_(model, pk.LowRankConfig(energy=0.9))

    assert set(report.ranks) == {"features.1.0", "features.3.0", "fc1", "fc2"}
    assert _accuracy(model, test) >= before_acc - 0.01
    assert report.params_after < report.params_before
    assert _params(model) == before_params - (report.params_before - report.params_after)
    layers = _low_rank(model)
    assert set(layers) == set(report.ranks)
    for row in report.layers:
        assert 0.9 <= row.energy < 1 and row.rank < row.full_rank
        assert row.params_after < row.params_before
        assert math.isclose(row.error, math.sqrt(1 - row.energy), abs_tol=1e-6)
        assert layers[row.name].rank == row.rank
    json.dumps(report.to_dict())


def test_energy_099_saves_nothing_on_digits_cnn_and_is_refused(trained):
    # Trained this small, every layer needs >= 95 % of its full rank to hold 99 % of its
    # spectrum: two factors would be larger than the weight, so nothing is factorized.
    model = trained()
    before = _state(model)
    with pytest.raises(pk.PrunekitError, match=r"fc1: rank 245 of 256 .* no saving"):
        factorize_(model, pk.LowRankConfig(energy=0.99))
    assert _same(model, before) and not _low_rank(model)


def test_rank_ratio_gives_exactly_the_rounded_ranks(trained):
    model = trained()
    report = factorize_(model, pk.LowRankConfig(rank_ratio=0.3, round_to=8))
    # full ranks: conv 1->32 3x3: 9, convs to 64 channels: 64, fc1: 256, fc2: 10.
    # ceil(0.3 * full), rounded up to a multiple of 8, at most the full rank:
    assert report.ranks == {"features.1.0": 24, "features.3.0": 24, "fc1": 80, "fc2": 8}
    # features.0.0: rank 8 of 9 needs 8 * (9 + 32) = 328 weights > 32 * 9 = 288.
    assert set(report.skipped) == {"features.0.0"}
    assert "no saving" in report.skipped["features.0.0"]
    modules = dict(model.named_modules())
    assert modules["fc1"].first.weight.shape == (80, 1024)
    assert modules["fc1"].second.weight.shape == (256, 80)
    assert modules["features.1.0"].first.weight.shape == (24, 32, 3, 3)
    assert modules["features.1.0"].second.weight.shape == (64, 24, 1, 1)


def test_min_rank_raises_small_ranks(trained):
    report = factorize_(trained(), pk.LowRankConfig(rank_ratio=0.01, min_rank=5))
    assert report.ranks["fc2"] == 5 and report.ranks["fc1"] == 5


def test_finetune_after_factorize_trains_the_factors(trained, digits):
    model = trained()
    factorize_(model, pk.LowRankConfig(rank_ratio=0.05))
    train = digits.loader("train", batch_size=64, seed=0)
    fc1 = model.fc1
    first, second = fc1.first.weight.detach().clone(), fc1.second.weight.detach().clone()
    before = _loss(model, train)
    pk.finetune_(model, train, epochs=2, lr=1e-3, progress=False)
    assert _loss(model, train) < before
    assert not torch.equal(fc1.first.weight, first) and not torch.equal(fc1.second.weight, second)
    assert isinstance(model.fc1, LowRankLinear)


# --------------------------------------------------------------------------- save and load


def test_save_load_is_bit_identical_also_into_a_fresh_instance(trained, digits, tmp_path):
    model = trained()
    factorize_(model, pk.LowRankConfig(rank_ratio=0.25))
    x = next(iter(digits.loader("test", batch_size=64)))[0]
    with torch.no_grad():
        expected = model.eval()(x)
    path = pk.save(model, tmp_path / "model")

    loaded = pk.load(path)
    torch.manual_seed(3)
    fresh = pk.models.build("digits-cnn")
    with torch.no_grad():
        assert not torch.equal(fresh.eval()(x), expected)
    into = pk.load(path, model=fresh)
    for other in (loaded, into):
        assert _classes(other) == _classes(model)
        with torch.no_grad():
            assert torch.equal(other(x), expected)


def test_load_refuses_a_swap_record_that_does_not_fit(trained):
    model = trained()
    before = _state(model)
    record = [{"module": "fc1", "kind": "low-rank", "args": {"rank": 257, "layer": "Linear"}}]
    with pytest.raises(pk.PrunekitError, match=r"rank=257; expected an integer in 1\.\.256"):
        swaps.replay_swaps_(model, record)
    record = [{"module": "fc1", "kind": "low-rank", "args": {"rank": 8, "layer": "Conv2d"}}]
    with pytest.raises(pk.PrunekitError, match="factorized a 'Conv2d' layer"):
        swaps.replay_swaps_(model, record)
    assert _same(model, before) and not _low_rank(model)


# --------------------------------------------------------------------------- layers


def test_a_linear_at_full_rank_is_reconstructed():
    torch.manual_seed(0)
    layer = nn.Linear(24, 16)
    spec = spectrum(layer.weight)
    new = low_rank_like(layer, *spec.factors(spec.full_rank), spec.full_rank)
    x = torch.randn(5, 24)
    assert isinstance(new, LowRankLinear) and new.rank == 16
    assert new.second.bias is layer.bias
    torch.testing.assert_close(new(x), layer(x))
    assert spec.error(spec.full_rank) == 0.0 and spec.energy(spec.full_rank) == 1.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"padding": 1},
        {"stride": 2, "padding": 2, "dilation": 2, "bias": False},
        {"padding": 1, "padding_mode": "reflect"},
    ],
    ids=["padded", "strided-dilated", "reflect"],
)
def test_a_conv_at_full_rank_reproduces_the_original(kwargs):
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 8, 3, **kwargs)
    spec = spectrum(conv.weight.reshape(8, -1))
    new = low_rank_like(conv, *spec.factors(spec.full_rank), spec.full_rank)
    x = torch.randn(2, 3, 9, 9)
    assert isinstance(new, LowRankConv2d)
    assert new.first.stride == conv.stride and new.first.dilation == conv.dilation
    assert new.second.kernel_size == (1, 1)
    torch.testing.assert_close(new(x), conv(x))


def test_truncation_is_the_best_low_rank_approximation():
    torch.manual_seed(0)
    w = torch.randn(12, 20)
    spec = spectrum(w)
    first, second = spec.factors(4)
    approx = (second @ first).float()
    error = float((w - approx).norm() / w.norm())
    assert math.isclose(error, spec.error(4), rel_tol=1e-5)
    assert error < spec.error(3)


def test_energy_picks_the_smallest_rank_holding_it():
    w = torch.diag(torch.tensor([3.0, 2.0, 1.0, 0.5]))  # squares 9, 4, 1, 0.25 of 14.25
    spec = spectrum(w)
    assert choose_rank(spec, energy=9 / 14.25) == 1
    assert choose_rank(spec, energy=9 / 14.25 + 1e-3) == 2
    assert choose_rank(spec, energy=0.95) == 3
    assert choose_rank(spec, energy=1.0) == 4
    assert choose_rank(spec, energy=0.5, round_to=3) == 3
    assert choose_rank(spec, rank_ratio=0.75) == 3 and choose_rank(spec, rank_ratio=0.3) == 2


# --------------------------------------------------------------------------- skipped layers


def test_layers_without_a_saving_grouped_or_tied_are_skipped_with_the_reason():
    model, _ = zoo.build("grouped-concat")
    report = factorize_(model, pk.LowRankConfig(rank_ratio=0.5))
    assert "groups=2" in report.skipped["grouped"]
    assert "groups=8" in report.skipped["depthwise"]
    assert set(_low_rank(model)) == {r.name for r in report.layers}
    assert not set(report.skipped) & set(_low_rank(model))

    lm, _ = zoo.build("tied-lm")
    report = factorize_(lm, pk.LowRankConfig(rank_ratio=0.25))
    tied = [n for n, why in report.skipped.items() if "tied" in why]
    assert tied and all(not isinstance(lm.get_submodule(n), LowRankLayer) for n in tied)

    residual, _ = zoo.build("residual")
    report = factorize_(residual, pk.LowRankConfig(rank_ratio=0.5))
    assert "no saving" in report.skipped["branch.2"]
    assert isinstance(residual.branch[2], nn.Conv2d)
    assert "branch.2" in str(report) and "branch.2" in report.to_markdown()


def test_targets_and_ignore_choose_the_layers(trained):
    model = trained()
    report = factorize_(
        model, pk.LowRankConfig(rank_ratio=0.25, targets=["Linear"], ignore=["fc2"])
    )
    assert set(report.ranks) == {"fc1"} and set(_low_rank(model)) == {"fc1"}


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"rank_ratio": 0.0}, r"rank_ratio must be in \(0, 1\]; got 0.0"),
        ({"rank_ratio": 1.5}, r"rank_ratio must be in \(0, 1\]; got 1.5"),
        ({"energy": -0.1}, r"energy must be in \(0, 1\]; got -0.1"),
        (
            {"rank_ratio": 0.5, "energy": 0.9},
            "set one of rank_ratio, energy, macs_reduction, params_reduction, not several",
        ),
        ({"min_rank": 0}, "min_rank"),
        ({"round_to": 0}, "round_to"),
        ({"ratio": 0.5}, "ratio"),
        ({"targets": "fc1"}, "targets"),
    ],
)
def test_bad_config_values_are_refused(fields, message):
    with pytest.raises(ValueError, match=message):
        pk.LowRankConfig(**fields)


def test_config_defaults_to_energy_and_round_trips():
    assert pk.LowRankConfig() == pk.LowRankConfig(energy=0.9)
    config = pk.LowRankConfig(rank_ratio=0.3, targets=["fc1"])
    assert pk.LowRankConfig.model_validate(json.loads(json.dumps(config.to_dict()))) == config


@pytest.mark.parametrize(
    ("config", "error", "message"),
    [
        (pk.LowRankConfig(targets=["nope"]), pk.PrunekitError, "targets: 'nope' matches no"),
        (pk.LowRankConfig(ignore=["re:("]), pk.PrunekitError, "ignore: 're:\\(' is not a valid"),
        (pk.LowRankConfig(rank_ratio=1.0), pk.PrunekitError, "rank_ratio=1.0.*lower rank_ratio"),
        (pk.KMeansConfig(), TypeError, "config: expected a LowRankConfig; got KMeansConfig"),
    ],
    ids=["unknown-target", "bad-regex", "no-saving", "wrong-config"],
)
def test_bad_input_is_refused_and_the_model_left_unchanged(trained, config, error, message):
    model = trained()
    before, classes = _state(model), _classes(model)
    with pytest.raises(error, match=message):
        factorize_(model, config)
    assert _same(model, before) and _classes(model) == classes
    assert swaps.swap_record(model) == []


def test_factorizing_twice_is_refused(trained):
    model = trained()
    factorize_(model, pk.LowRankConfig(rank_ratio=0.25))
    before, classes = _state(model), _classes(model)
    with pytest.raises(pk.PrunekitError, match="already factorized"):
        factorize_(model, pk.LowRankConfig(rank_ratio=0.25))
    assert _same(model, before) and _classes(model) == classes


def test_a_failed_swap_part_way_puts_every_layer_back(trained, monkeypatch):
    model = trained()
    before, classes = _state(model), _classes(model)
    real, calls = swaps.swap_, []

    def failing(*args, **kwargs):
        calls.append(args[1])
        if len(calls) == 3:
            raise RuntimeError("injected")
        return real(*args, **kwargs)

    monkeypatch.setattr(factorize_api.swaps, "swap_", failing)
    with pytest.raises(RuntimeError, match="injected"):
        factorize_(model, pk.LowRankConfig(rank_ratio=0.25))
    assert len(calls) == 3
    assert _same(model, before) and _classes(model) == classes
    assert swaps.swap_record(model) == []


def test_a_frozen_layer_stays_frozen_and_the_copy_is_independent(trained):
    model = trained()
    model.fc2.weight.requires_grad_(False)
    dense = copy.deepcopy(model)
    factorize_(model, pk.LowRankConfig(rank_ratio=0.25))
    assert not model.fc2.first.weight.requires_grad and not model.fc2.second.weight.requires_grad
    assert model.fc1.first.weight.requires_grad
    assert isinstance(dense.fc1, nn.Linear)


# --------------------------------------------------------------------------- recipes


def test_a_recipe_factorizes_then_finetunes_and_saves_the_low_rank_model(trained, digits, tmp_path):
    from prunekit.recipe.runner import Evaluation

    recipe = pk.Recipe.from_yaml(
        "steps:\n  - factorize: {rank_ratio: 0.25}\n  - finetune: {epochs: 1, lr: 0.001}"
    )
    assert recipe.steps[0].method == "svd"
    assert recipe.steps[0].config == pk.LowRankConfig(rank_ratio=0.25)
    quick = Evaluation(batch_sizes=(1,), min_run_time=0.01, step_latency=False)
    train = digits.loader("train", batch_size=64, seed=0)
    test = digits.loader("test", batch_size=512)
    report = pk.run_recipe(
        recipe, trained(), train, test, out=tmp_path / "run", evaluation=quick, progress=False
    )
    assert isinstance(report.model.fc1, LowRankLinear)
    loaded = pk.load(tmp_path / "run" / "model")
    assert _classes(loaded) == _classes(report.model)
    assert _same(loaded, _state(report.model))


def test_a_recipe_refuses_bad_factorize_fields():
    with pytest.raises(pk.RecipeError, match="rank_ratio"):
        pk.Recipe.from_yaml("steps:\n  - factorize: {rank_ratio: 2}")
