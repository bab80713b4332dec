"""The sweep on a really trained model: shape, exact restore, fragile layers, suggestions."""

import pytest
import torch

import prunekit as pk
from prunekit.analyze import SensitivityProfile, SensitivityRow, analyze_sensitivity
from prunekit.targets import select_layers

RATIOS = (0.0, 0.5, 0.9)


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def profile(trained, accuracy):
    return analyze_sensitivity(trained, accuracy, ratios=RATIOS, progress=False)


def test_one_row_per_layer_and_ratio_and_zero_sparsity_is_the_baseline(trained, profile):
    layers = list(select_layers(trained))
    assert profile.layers == layers
    assert [(r.layer, r.sparsity) for r in profile.rows] == [(n, s) for n in layers for s in RATIOS]
    assert profile.baseline > 90.0
    for layer in layers:
        assert profile.curve(layer)[0].metric == profile.baseline
        assert profile.curve(layer)[0].params == trained.get_submodule(layer).weight.numel()


def test_the_thin_first_conv_is_more_fragile_than_the_wide_hidden_layer(profile):
    def drop(layer):
        return profile.baseline - next(r.metric for r in profile.curve(layer) if r.sparsity == 0.9)

    # conv1 keeps 7 of 72 weights at 90%; fc keeps 3,277 of 32,768.
    assert drop("conv1") > drop("fc") + 5.0


@pytest.mark.parametrize(
    "config",
    [
        pk.MagnitudeConfig(),
        pk.MagnitudeConfig(pattern="2:4", ignore=["conv1"]),
        pk.TaylorConfig(num_samples=128),
        pk.WandaConfig(num_samples=64),
        pk.MagnitudeConfig(pattern="channel"),
    ],
    ids=["magnitude", "2:4", "taylor", "wanda", "channel"],
)
def test_the_model_is_bit_identical_afterwards(trained, accuracy, digits, config):
    before = _state(trained)
    grads = [None if p.grad is None else p.grad.clone() for p in trained.parameters()]
    profile = analyze_sensitivity(
        trained, accuracy, config=config, ratios=(0.0, 0.7), data=digits[0], progress=False
    )
    assert _same(before, _state(trained))
    assert all(
        a is None if b is None else torch.equal(a, b)
        for a, b in zip([p.grad for p in trained.parameters()], grads, strict=True)
    )
    if config.nm is not None:  # N:M: one point per layer, at N/M
        assert profile.layers == ["conv2", "fc", "out"] and profile.ratios == [0.5]
        return
    if config.structured:  # the groups whose units a layer produces: not the logits
        assert profile.layers == ["conv1", "conv2", "fc"]
    assert len(profile.rows) == 2 * len(profile.layers)
    for layer in profile.layers:  # pruning 0% changes nothing, whatever the method
        assert profile.curve(layer)[0].metric == profile.baseline


def test_layers_picks_a_subset_and_rejects_unknown_names(trained, accuracy):
    profile = analyze_sensitivity(trained, accuracy, ratios=(0.5,), layers=["out", "conv1"],
                                  progress=False)  # fmt: skip
    assert profile.layers == ["conv1", "out"]  # model order
    with pytest.raises(pk.PrunekitError, match=r"'conv9'.*choose from: conv1, conv2, fc, out"):
        analyze_sensitivity(trained, accuracy, layers=["conv9"], progress=False)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ratios": (0.5, 1.0)}, "ratios must be sparsities in \\[0, 1\\)"),
        ({"config": pk.MovementConfig()}, "learns its scores while training"),
        ({"config": pk.TaylorConfig()}, "needs batches of labelled data"),
        ({"backend": "cluster"}, "backend must be one of auto, ray, local"),
    ],
)
def test_bad_arguments_raise_and_leave_the_model_alone(trained, accuracy, kwargs, message):
    before = _state(trained)
    with pytest.raises(pk.PrunekitError, match=message):
        analyze_sensitivity(trained, accuracy, progress=False, **kwargs)
    assert _same(before, _state(trained))


def test_csv_round_trip_is_exact(profile, tmp_path):
    path = profile.to_csv(tmp_path / "s.csv")
    assert SensitivityProfile.from_csv(path) == profile
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(pk.PrunekitError, match="not a sensitivity CSV"):
        SensitivityProfile.from_csv(tmp_path / "bad.csv")


@pytest.mark.parametrize("max_drop", [0.0, 1.0, 5.0, 30.0])
def test_suggest_respects_max_drop(profile, max_drop):
    table = profile.suggest(max_drop)
    assert list(table) == profile.layers
    for layer, chosen in table.items():
        curve = profile.curve(layer)
        assert all(profile.baseline - r.metric <= max_drop for r in curve if r.sparsity <= chosen)
        after = [r for r in curve if r.sparsity > chosen]
        assert not after or profile.baseline - after[0].metric > max_drop


def test_suggest_stops_at_the_first_point_over_budget():
    metrics = [90.0, 89.5, 80.0, 89.9]  # a lucky point after a real drop is not suggested
    rows = [
        SensitivityRow("a", s, m, 10) for s, m in zip((0.1, 0.3, 0.5, 0.7), metrics, strict=True)
    ]
    profile = SensitivityProfile(90.0, rows)
    assert profile.max_sparsity("a", 1.0) == 0.3
    assert profile.max_sparsity("a", 0.1) == 0.1
    with pytest.raises(pk.PrunekitError, match="max_drop must be at least 0"):
        profile.max_sparsity("a", -1.0)
    with pytest.raises(pk.PrunekitError, match="'b' was not swept"):
        profile.curve("b")


def test_the_suggested_table_prunes_each_layer_to_its_own_sparsity(trained, accuracy, profile):
    import copy

    table = profile.suggest(2.0)
    model = copy.deepcopy(trained)
    pk.prune_(model, pk.MagnitudeConfig(sparsity=0.5, layer_sparsity=table))
    for name, m in select_layers(model).items():
        assert int((m.weight == 0).sum()) == round(table[name] * m.weight.numel())


def test_markdown_table_has_a_row_per_layer_and_the_suggestion(profile):
    text = profile.to_markdown(max_drop=1.0)
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) == 1 + len(profile.layers)
    assert rows[0].split(" | ")[2:5] == ["0%", "50%", "90%"]
    assert rows[1].endswith(f"{profile.max_sparsity('conv1', 1.0):.0%} |")


def test_the_configs_own_layer_table_does_not_leak_into_the_sweep(trained, accuracy, profile):
    # Each point prunes one layer alone: a layer_sparsity table in the config is not applied.
    config = pk.MagnitudeConfig(layer_sparsity={"out": 0.9})
    again = analyze_sensitivity(trained, accuracy, config=config, ratios=RATIOS, progress=False)
    assert again == profile
