"""Per-layer unstructured sparsity (``layer_sparsity``): exact counts, selectors, schedules."""

import pytest
import torch

import prunekit as pk
from prunekit.prune.pruner import Pruner
from prunekit.targets import select_layers
from tests import zoo


def _zeros(model) -> dict[str, int]:
    return {n: int((m.weight == 0).sum()) for n, m in select_layers(model).items()}


def _expected(model, table: dict[str, float]) -> dict[str, int]:
    return {n: round(table[n] * m.weight.numel()) for n, m in select_layers(model).items()}


@pytest.mark.parametrize(
    "make",
    [pk.MagnitudeConfig, pk.RandomConfig, pk.TaylorConfig, pk.WandaConfig, pk.SparseGPTConfig],
    ids=["magnitude", "random", "taylor", "wanda", "sparsegpt"],
)
def test_each_layer_loses_exactly_its_own_share(make):
    model, batches = zoo.build("cnn-bn")
    config = make(sparsity=0.3, layer_sparsity={"features.0": 0.75, "head": 0.9})
    report = pk.prune_(model, config, data=batches)
    expected = _expected(model, {"features.0": 0.75, "features.3": 0.3, "head": 0.9})
    assert _zeros(model) == expected
    assert report.zeros == sum(expected.values())


def test_class_and_regex_selectors_and_the_first_match_wins():
    model, _ = zoo.build("cnn-bn")
    # features.0 matches both the regex and "Conv2d": the regex comes first and wins.
    table = {"re:^features\\.0$": 0.2, "Conv2d": 0.6, "re:head": 0.8}
    pk.prune_(model, pk.MagnitudeConfig(sparsity=0.1, layer_sparsity=table))
    assert _zeros(model) == _expected(model, {"features.0": 0.2, "features.3": 0.6, "head": 0.8})


def test_unmatched_layers_use_sparsity_and_zero_leaves_a_layer_dense():
    model, _ = zoo.build("mlp")
    pk.prune_(model, pk.MagnitudeConfig(sparsity=0.5, layer_sparsity={"net.3": 0.0}))
    assert _zeros(model) == {"net.1": round(0.5 * 64 * 32), "net.3": 0}


def test_magnitude_keeps_the_largest_weights_of_each_layer():
    model, _ = zoo.build("mlp")
    dense = {n: m.weight.detach().abs().clone() for n, m in select_layers(model).items()}
    pk.prune_(model, pk.MagnitudeConfig(layer_sparsity={"net.1": 0.25, "net.3": 0.75}))
    for name, m in select_layers(model).items():
        kept, gone = dense[name][m.weight != 0], dense[name][m.weight == 0]
        assert kept.min() >= gone.max()


@pytest.mark.parametrize("schedule", ["agp", "iterative"])
def test_gradual_schedules_end_at_each_layers_own_target(schedule):
    model, batches = zoo.build("mlp")
    table = {"net.1": 0.8, "net.3": 0.4}
    report = pk.finetune_(
        model,
        batches,
        epochs=3,  # 12 steps: AGP's last update (step 10) falls inside
        prune=pk.MagnitudeConfig(sparsity=0.6, layer_sparsity=table),
        schedule=schedule,
        progress=False,
    )
    assert len(report.pruning) > 1  # it did step, not jump
    assert _zeros(model) == _expected(model, table)


@pytest.mark.parametrize(
    "make",
    [pk.MagnitudeConfig, pk.TaylorConfig, pk.WandaConfig],
    ids=["magnitude", "taylor", "wanda"],
)
def test_a_table_alone_is_enough_in_one_shot(make):
    # sparsity=0 plus a table (what prunekit analyze suggests and auto_compress tries): every
    # layer of the table reaches its own sparsity, the others stay dense.
    model, batches = zoo.build("cnn-bn")
    table = {"features.0": 0.5, "head": 0.9}
    pk.prune_(model, make(sparsity=0.0, layer_sparsity=table), data=batches)
    assert _zeros(model) == _expected(model, {"features.0": 0.5, "features.3": 0.0, "head": 0.9})


@pytest.mark.parametrize("schedule", ["agp", "iterative", "oneshot"])
def test_a_table_alone_is_enough_for_gradual_schedules(schedule):
    # sparsity=0 with a per-layer table (what a suggested table from `prunekit analyze` says):
    # the schedule steps toward the table instead of taking 0 for "nothing to do".
    model, batches = zoo.build("mlp")
    table = {"net.1": 0.8, "net.3": 0.4}
    pk.finetune_(
        model,
        batches,
        epochs=3,
        prune=pk.MagnitudeConfig(sparsity=0.0, layer_sparsity=table),
        schedule=schedule,
        progress=False,
    )
    assert _zeros(model) == _expected(model, table)


def test_agp_steps_scale_every_layer_with_the_overall_progress():
    model, _ = zoo.build("mlp")
    config = pk.MagnitudeConfig(sparsity=0.5, layer_sparsity={"net.1": 0.8})
    pruner = Pruner(model, config)
    masks = pruner.prune_to(0.25)  # half-way to the final 0.5
    assert int((~masks["net.1"]).sum()) == round(0.4 * 64 * 32)
    assert int((~masks["net.3"]).sum()) == round(0.25 * 32 * 10)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: pk.MagnitudeConfig(pattern="2:4", layer_sparsity={"a": 0.5}), "layer_sparsity"),
        (lambda: pk.MagnitudeConfig(scope="global", layer_sparsity={"a": 0.5}), "scope='layer'"),
        (lambda: pk.MagnitudeConfig(layer_sparsity={"a": 1.0}), "layer_sparsity\\['a'\\]"),
    ],
)
def test_bad_configs_name_the_field(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (pk.MagnitudeConfig(layer_sparsity={"conv9": 0.5}), "'conv9' matches no layer"),
        (pk.MagnitudeConfig(layer_sparsity={"re:(": 0.5}), "not a valid regular expression"),
        (
            pk.WandaConfig(layer_sparsity={"head": 0.5}, allocation="owl"),
            "layer_sparsity and allocation='owl'",
        ),
        (
            pk.SparseGPTConfig(layer_sparsity={"head": 0.5}, allocation="sensitivity"),
            "layer_sparsity and allocation='sensitivity'",
        ),
        (pk.WandaConfig(layer_sparsity={"conv9": 0.5}), "'conv9' matches no layer"),
    ],
)
def test_bad_selectors_raise_and_leave_the_model_untouched(config, message):
    model, batches = zoo.build("cnn-bn")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(pk.PrunekitError, match=message):
        pk.prune_(model, config, data=batches)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_layer_sparsity_round_trips_through_a_recipe_dict():
    config = pk.MagnitudeConfig(sparsity=0.2, layer_sparsity={"re:fc": 0.9, "Conv2d": 0.1})
    again = pk.MagnitudeConfig(**config.to_dict())
    assert again == config and list(again.layer_sparsity) == ["re:fc", "Conv2d"]
