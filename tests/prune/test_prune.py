"""The pruning contract, for every registered method on every zoo model."""

import pytest
import torch
from torch import nn

import prunekit as pk
from prunekit.registry import methods
from prunekit.targets import select_layers
from tests import zoo

PRUNE_METHODS = [m for m in methods("prune")]
# Structured-only methods (bn-scale) have their own suite: tests/prune/structured/.
ONE_SHOT = [m for m in PRUNE_METHODS if not m.config.needs_training and not m.config().structured]


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _run(model, batches):
    model.eval()
    with torch.no_grad():
        return model(batches[0][0])


def _zeros(model, names=None):
    layers = select_layers(model)
    return {n: int((m.weight == 0).sum()) for n, m in layers.items() if names is None or n in names}


@pytest.mark.parametrize("model_name", list(zoo.ZOO))
@pytest.mark.parametrize("info", ONE_SHOT, ids=lambda m: m.name)
@pytest.mark.parametrize("scope", ["layer", "global"])
def test_conformance_one_shot(model_name, info, scope):
    model, batches = zoo.build(model_name)
    out_before = _run(model, batches)
    if scope == "global" and getattr(info.config, "needs_activations", False):
        with pytest.raises(ValueError, match="scope='layer'"):
            info.config(sparsity=0.6, scope=scope)
        return
    config = info.config(sparsity=0.6, scope=scope)
    report = pk.prune_(model, config, data=batches)
    out_after = _run(model, batches)
    assert out_after.shape == out_before.shape
    assert torch.isfinite(out_after).all()
    layers = select_layers(model)
    skipped = report.skipped
    assert set(report.per_layer) | set(skipped) == set(layers)
    if scope == "layer":
        for name, m in layers.items():
            if name in skipped:
                continue
            # tied weights are pruned through whichever layer holds them; count each tensor once
            assert report.per_layer[name] == pytest.approx(
                round(0.6 * m.weight.numel()) / m.weight.numel()
            )
    else:
        unique = {id(m.weight): m.weight for m in layers.values()}
        zeros = sum(int((w == 0).sum()) for w in unique.values())
        assert zeros == round(0.6 * sum(w.numel() for w in unique.values()))
    assert type(config)(**config.to_dict()) == config


@pytest.mark.parametrize("info", ONE_SHOT, ids=lambda m: m.name)
def test_ignore_is_honoured(info):
    model, batches = zoo.build("cnn-bn")
    before = model.features[0].weight.detach().clone()
    report = pk.prune_(model, info.config(sparsity=0.5, ignore=["features.0"]), data=batches)
    assert "features.0" not in report.per_layer
    assert torch.equal(model.features[0].weight, before)


@pytest.mark.parametrize("pattern", ["2:4", "4:8"])
@pytest.mark.parametrize("info", ONE_SHOT, ids=lambda m: m.name)
def test_nm_pattern_on_linear_and_conv(info, pattern):
    model, batches = zoo.build("cnn-bn")
    pk.prune_(model, info.config(pattern=pattern, ignore=["features.0"]), data=batches)
    n, m = map(int, pattern.split(":"))
    conv = model.features[3].weight  # [16, 8, 3, 3]: groups along the 8 input channels
    groups = conv.movedim(1, -1).reshape(-1, m)
    assert torch.all((groups == 0).sum(dim=1) == n)
    fc = model.head.weight.reshape(-1, m)
    assert torch.all((fc == 0).sum(dim=1) == n)


def test_targets_by_class_name_exact_name_and_regex():
    model, _ = zoo.build("cnn-bn")
    assert list(select_layers(model, ["Linear"])) == ["head"]
    assert list(select_layers(model, ["features.3"])) == ["features.3"]
    assert list(select_layers(model, ["re:^features\\."])) == ["features.0", "features.3"]


def test_movement_prunes_during_finetuning():
    model, batches = zoo.build("mlp")
    report = pk.finetune_(
        model,
        batches,
        epochs=3,
        prune=pk.MovementConfig(sparsity=0.75),
        schedule="agp",
        progress=False,
    )
    assert report.history[-1]["sparsity"] == pytest.approx(0.75, abs=1e-3)
    for m in select_layers(model).values():
        assert int((m.weight == 0).sum()) == round(0.75 * m.weight.numel())


# --- bad input: a clear error, and the model bit-identical afterwards -----------------------------

BAD = [
    (lambda: pk.MagnitudeConfig(sparsity=1.5), "sparsity must be in \\[0, 1\\)"),
    (lambda: pk.MagnitudeConfig(sparsity=1.0), "sparsity must be in \\[0, 1\\)"),
    (lambda: pk.MagnitudeConfig(pattern="4:4"), "0 < N < M"),
    (lambda: pk.MagnitudeConfig(pattern="2:4", sparsity=0.9), "leave sparsity unset"),
    (lambda: pk.MagnitudeConfig(pattern="diagonal"), "'unstructured', 'N:M'"),
    (lambda: pk.MagnitudeConfig(bogus=1), "bogus"),
]


@pytest.mark.parametrize(("make", "message"), BAD)
def test_bad_configs_are_rejected_with_the_field_named(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize(
    ("model_name", "config", "data", "message"),
    [
        (
            "cnn-bn",
            pk.MagnitudeConfig(pattern="2:4"),
            None,
            "features.0.*ignore=\\['features.0'\\]",
        ),
        ("cnn-bn", pk.MagnitudeConfig(targets=["conv9"]), None, "'conv9' matches no prunable"),
        ("cnn-bn", pk.TaylorConfig(), None, "needs batches of labelled data"),
        ("cnn-bn", pk.TaylorConfig(), "unlabelled", "needs labels"),
        ("cnn-bn", pk.MovementConfig(), "batches", "learns its scores while training"),
    ],
)
def test_failed_prune_leaves_the_model_untouched(model_name, config, data, message):
    model, batches = zoo.build(model_name)
    if data == "batches":
        data = batches
    elif data == "unlabelled":
        data = [x for x, _ in batches]
    before = _state(model)
    grads_before = [p.grad for p in model.parameters()]
    mode = model.training
    with pytest.raises(pk.PrunekitError, match=message):
        pk.prune_(model, config, data=data)
    assert _same(before, _state(model))
    assert [p.grad for p in model.parameters()] == grads_before
    assert model.training == mode


@pytest.mark.parametrize(
    ("model", "config", "message"),
    [
        (nn.Linear(4, 4), None, "config: expected a pruning config .* got NoneType"),
        (nn.Linear(4, 4), {"sparsity": 0.5}, "config: expected a pruning config .* got dict"),
        (nn.Linear(4, 4), pk.KMeansConfig(), "config: .* got KMeansConfig"),
        ("model", pk.MagnitudeConfig(), "model: expected a torch.nn.Module; got str"),
    ],
)
def test_a_wrong_argument_type_is_a_type_error_naming_it(model, config, message):
    with pytest.raises(TypeError, match=message):
        pk.prune_(model, config)


def test_model_without_prunable_layers_is_rejected():
    model = nn.Sequential(nn.ReLU(), nn.BatchNorm1d(4))
    with pytest.raises(pk.PrunekitError, match="no prunable layer"):
        pk.prune_(model, pk.MagnitudeConfig())


def test_taylor_scoring_pass_leaves_batchnorm_statistics_and_grads_alone():
    model, batches = zoo.build("cnn-bn")
    stats = model.features[1].running_mean.clone()
    pk.prune_(model, pk.TaylorConfig(sparsity=0.5), data=batches)
    assert torch.equal(model.features[1].running_mean, stats)
    assert all(p.grad is None for p in model.parameters())


def test_an_already_pruned_weight_never_comes_back():
    model, _batches = zoo.build("mlp")
    pk.prune_(model, pk.MagnitudeConfig(sparsity=0.5))
    first = {n: m.weight == 0 for n, m in select_layers(model).items()}
    pk.prune_(model, pk.RandomConfig(sparsity=0.8, seed=3))
    for n, m in select_layers(model).items():
        assert torch.all((m.weight == 0)[first[n]])
        assert int((m.weight == 0).sum()) == round(0.8 * m.weight.numel())


def test_a_config_list_of_100000_items_is_refused_with_a_short_message():
    # pydantic reported one error per item: an 18 MB message.
    with pytest.raises(ValueError) as err:
        pk.MagnitudeConfig(ignore=["x"] * 100_000)
    assert len(str(err.value)) < 1000 and "100,000 items" in str(err.value)


LEAN = {
    "layer": pk.MagnitudeConfig(sparsity=0.5),
    "global": pk.MagnitudeConfig(sparsity=0.37, scope="global"),
    "2:4": pk.MagnitudeConfig(sparsity=0.5, pattern="2:4", targets=["Linear"]),
    "layer_sparsity": pk.MagnitudeConfig(sparsity=0.2, layer_sparsity={"Linear": 0.6}),
}


@pytest.mark.parametrize("model_name", ["mlp", "cnn-bn", "attention"])
@pytest.mark.parametrize("case", list(LEAN))
def test_magnitude_planned_a_part_at_a_time_equals_the_whole_ranking(case, model_name, monkeypatch):
    """Magnitude scores are read a few rows at a time (nothing the size of the model is held);
    the masks are those of ranking every score at once, ties (here: many) broken alike, and
    prune_ applies them."""
    from prunekit.prune import pruner as pruner_module

    monkeypatch.setattr(pruner_module, "CHUNK", 37)  # many parts per layer, ties across them
    model, _ = zoo.build(model_name)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_((p * 8).round() / 8)  # few distinct |w|, some exactly zero
    config = LEAN[case]
    pruner = pruner_module.Pruner(model, config)
    assert pruner._per_part
    lean = pruner.plan(config.schedule_final)
    whole = pruner._plan_at_once(config.schedule_final)
    assert lean.keys() == whole.keys()
    assert all(torch.equal(lean[n], whole[n]) for n in whole)
    before = {n: layer.weight.detach().clone() for n, layer in pruner.layers.items()}
    pk.prune_(model, config)
    for n, layer in pruner.layers.items():
        assert torch.equal(layer.weight.detach(), before[n] * lean[n])


def test_magnitude_failing_part_way_leaves_the_model_untouched(monkeypatch):
    """Layers are pruned one after another: a failure at the second puts the first back."""
    from prunekit.prune import pruner as pruner_module

    model, _ = zoo.build("mlp")
    before = _state(model)
    calls = []

    def failing(layers, masks, **kwargs):
        calls.append(list(layers))
        if len(calls) == 2:
            raise RuntimeError("disk full")
        return apply(layers, masks, **kwargs)

    apply = pruner_module.apply_masks_
    monkeypatch.setattr(pruner_module, "apply_masks_", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        pk.prune_(model, pk.MagnitudeConfig(sparsity=0.5))
    assert len(calls) == 2
    assert _same(_state(model), before)
