"""Reconstruction after channel pruning (reconstruct=True) and the reconstruction criterion.

On a trained builtin:digits-cnn: the refit lowers each refit layer's output error against the
unpruned model on held-out data and raises accuracy, without changing any shape; ignored layers
stay as they were; bad input is one clear error with the model untouched; save → load is exact.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
from pydantic import ValidationError
from torch import nn

import prunekit as pk
from prunekit.cli import main
from prunekit.data import load_data
from prunekit.measure.accuracy import top1_accuracy
from prunekit.prune.structured.reconstruct import removal_scores, ridge_refit
from prunekit.recipe import Recipe
from prunekit.specs import load_model

CHANNEL = {"pattern": "channel", "sparsity": 0.6}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """builtin:digits-cnn, trained (once per module, into a temporary cache)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PRUNEKIT_CACHE", str(tmp_path_factory.mktemp("cache")))
        model, _ = load_model("builtin:digits-cnn")
    return model.eval()


@pytest.fixture(scope="module")
def digits():
    data = load_data("digits")
    calib = list(data.loader("train", batch_size=64, seed=0))
    test = list(data.loader("test", batch_size=512))
    return calib, test


def _pruned(model: nn.Module, config: pk.PruneConfig, calib: list) -> tuple[nn.Module, object]:
    pruned = copy.deepcopy(model)
    report = pk.prune_(pruned, config, data=calib)
    return pruned, report


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(
        a[k].shape == b[k].shape and torch.equal(a[k], b[k]) for k in a
    )


@torch.no_grad()
def _layer_output(model: nn.Module, layer: str, batches: list) -> torch.Tensor:
    seen = []
    handle = model.get_submodule(layer).register_forward_hook(lambda m, a, out: seen.append(out))
    try:
        for x, _ in batches:
            model(x)
    finally:
        handle.remove()
    return torch.cat(seen)


def test_the_refit_lowers_each_layers_output_error_and_raises_accuracy(trained, digits):
    calib, test = digits
    plain, _ = _pruned(trained, pk.MagnitudeConfig(**CHANNEL), calib)
    refit, report = _pruned(trained, pk.MagnitudeConfig(**CHANNEL, reconstruct=True), calib)
    # Every layer whose inputs lost channels was refit, front to back.
    assert [r.layer for r in report.refits] == ["features.1.0", "features.3.0", "fc1", "fc2"]
    assert all(r.error_after < 0.5 * r.error_before for r in report.refits)
    # fc2 keeps all its outputs: compare it with the unpruned model's on held-out data.
    dense = _layer_output(trained, "fc2", test)
    err_plain = (_layer_output(plain, "fc2", test) - dense).pow(2).sum()
    err_refit = (_layer_output(refit, "fc2", test) - dense).pow(2).sum()
    assert err_refit < 0.5 * err_plain
    acc_plain = top1_accuracy(plain, test)[0]
    acc_refit = top1_accuracy(refit, test)[0]
    assert acc_refit > acc_plain + 0.05, (acc_plain, acc_refit)
    # The refit changes weights only: the same shapes as without it.
    assert {k: v.shape for k, v in refit.state_dict().items()} == {
        k: v.shape for k, v in plain.state_dict().items()
    }
    assert "refit fc1: output error" in str(report)
    json.dumps(report.to_dict())


def test_the_reconstruction_criterion_leaves_less_error_than_magnitude_after_the_refit(
    trained, digits
):
    """It ranks channels by the error left once the next layer is refit: with the same refit,
    the logits end nearer the unpruned model's on held-out data than magnitude's choice."""
    calib, test = digits
    dense = _layer_output(trained, "fc2", test)
    errors = {}
    for config in (
        pk.MagnitudeConfig(**CHANNEL, reconstruct=True),
        pk.ReconstructionConfig(**CHANNEL),
    ):
        model, report = _pruned(trained, config, calib)
        assert report.refits
        errors[report.method] = (_layer_output(model, "fc2", test) - dense).pow(2).sum()
    assert errors["reconstruction"] < 0.9 * errors["magnitude"], errors


def test_ridge_refit_is_least_squares_pulled_toward_the_old_weights():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 6, generator=g, dtype=torch.float64)
    y = x @ torch.randn(6, 3, generator=g, dtype=torch.float64) + 0.1 * torch.randn(
        500, 3, generator=g, dtype=torch.float64
    )
    w0 = torch.randn(3, 6, generator=g, dtype=torch.float64)
    exact = torch.linalg.lstsq(x, y).solution.t()
    assert torch.allclose(ridge_refit(x.t() @ x, x.t() @ y, w0, dampening=1e-12), exact)
    # A strong ridge keeps the trained weights where the data says little.
    assert torch.allclose(ridge_refit(x.t() @ x, x.t() @ y, w0, dampening=1e6), w0, atol=1e-3)


def test_a_duplicated_channel_is_ranked_first_to_go():
    """Removing a channel that copies another costs nothing once the layer is refit, however
    large its weights: the criterion sees that, a magnitude ranking cannot."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1000, 4, generator=g, dtype=torch.float64)
    x[:, 3] = x[:, 0]
    w = torch.randn(5, 4, generator=g, dtype=torch.float64)
    w[:, 3] *= 10  # the copy has the largest weights
    scores = removal_scores([(w, x.t() @ x, torch.arange(4).view(4, 1))])
    assert scores.argmin() in (0, 3)
    assert scores.min() < 0.1 * sorted(scores)[1]


def test_an_ignored_layer_is_neither_pruned_nor_refit(trained, digits):
    calib, _ = digits
    config = pk.MagnitudeConfig(**CHANNEL, reconstruct=True, ignore=["fc1"])
    before = _state(trained.get_submodule("fc1"))
    model, report = _pruned(trained, config, calib)
    assert _same(_state(model.get_submodule("fc1")), before)
    refit = [r.layer for r in report.refits]
    assert "fc1" not in refit and "features.1.0" in refit


def test_bad_input_is_one_clear_error_and_the_model_is_untouched(trained, digits):
    calib, _ = digits
    model = copy.deepcopy(trained)
    before = _state(model)
    config = pk.MagnitudeConfig(**CHANNEL, reconstruct=True)
    x = calib[0][0]
    with pytest.raises(pk.PrunekitError, match=r"^data: reconstruct=True .* pass data="):
        pk.prune_(model, config, example_inputs=(x,))
    with pytest.raises(pk.PrunekitError, match="data: reconstruct got no calibration batches"):
        pk.prune_(model, config, data=[], example_inputs=(x,))
    with pytest.raises(pk.PrunekitError, match="data: reconstruction scores"):
        pk.prune_(
            model, pk.ReconstructionConfig(sparsity=0.5, reconstruct=False), example_inputs=(x,)
        )
    assert _same(_state(model), before)
    with pytest.raises(ValidationError, match="reconstruct applies to structured pruning only"):
        pk.MagnitudeConfig(sparsity=0.5, reconstruct=True)
    with pytest.raises(ValidationError, match="reconstruct_samples"):
        pk.MagnitudeConfig(**CHANNEL, reconstruct=True, reconstruct_samples=0)


def test_a_failing_refit_rolls_the_shrink_back(trained, digits, monkeypatch):
    calib, _ = digits
    model = copy.deepcopy(trained)
    before = _state(model)

    def fail(*args, **kwargs):
        raise pk.PrunekitError("injected")

    monkeypatch.setattr("prunekit.prune.structured.reconstruct.ridge_refit", fail)
    with pytest.raises(pk.PrunekitError, match="injected"):
        pk.prune_(model, pk.MagnitudeConfig(**CHANNEL, reconstruct=True), data=calib)
    assert _same(_state(model), before)


def test_save_load_gives_identical_outputs(trained, digits, tmp_path):
    calib, test = digits
    model, _ = _pruned(trained, pk.ReconstructionConfig(**CHANNEL), calib)
    x = test[0][0]
    pk.save(model, tmp_path / "m")
    loaded = pk.load(tmp_path / "m", model=pk.models.DigitsCNN())
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x), model(x))


def test_reachable_from_recipes_and_the_cli(tmp_path, capsys):
    recipe = Recipe.from_yaml(
        "steps:\n  - prune: {method: magnitude, pattern: channel, sparsity: 0.5, reconstruct: true}"
    )
    assert recipe.steps[0].config.reconstruct is True

    torch.manual_seed(0)
    from safetensors.torch import save_model

    weights = tmp_path / "w.safetensors"
    save_model(pk.models.DigitsCNN(), str(weights))
    argv = ["prune", "--model", "builtin:digits-cnn", "--weights", str(weights),
            "--data", "digits", "--method", "magnitude", "--pattern", "channel",
            "--sparsity", "0.5"]  # fmt: skip
    out = tmp_path / "run"
    assert main([*argv, "--reconstruct", "--out", str(out), "--json"]) == 0
    capsys.readouterr()
    refits = json.loads((out / "report.json").read_text())["prune"]["refits"]
    assert [r["layer"] for r in refits] == ["features.1.0", "features.3.0", "fc1", "fc2"]
    # reconstruct with an unstructured pattern: exit 2, one line naming the field.
    bad = [*argv[:-4], "--sparsity", "0.5", "--reconstruct", "--out", str(tmp_path / "bad")]
    assert main(bad) == 2
    assert "reconstruct applies to structured pruning only" in capsys.readouterr().err
