"""Static int8 repairs: cross-layer equalization, bias correction, AdaRound."""

import copy
import json

import pytest
import torch
from pydantic import ValidationError
from torch import nn

import prunekit as pk
from prunekit.cli import main
from prunekit.errors import PrunekitError
from prunekit.export import export_onnx
from prunekit.models import build
from prunekit.quantize import Int8StaticConfig, StaticInt8Region, quantize_
from prunekit.quantize.repairs import (
    equalize_,
    find_pairs,
    fold_batchnorm,
    input_ranges,
    learn_rounding,
    nearest_codes,
    output_ranges,
)
from prunekit.recipe import Recipe
from prunekit.surgery import swaps

ALL = {"equalize": True, "bias_correction": True, "rounding": "adaround"}


def _mobilenet(spread: float = 1.0, **kwargs) -> nn.Module:
    """The built-in MobileNetV2-style net (``kwargs`` to its class) with BatchNorm statistics
    spread as a trained net's are (per-channel scales ``exp(spread · N(0, 1))``), so folding them
    makes the per-channel weight ranges as unequal as the repairs are meant for."""
    torch.manual_seed(0)
    model = build("mobilenet-v2", **kwargs).eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data = torch.exp(spread * torch.randn(m.num_features))
            m.bias.data = 0.1 * torch.randn(m.num_features)
            m.running_mean = 0.1 * torch.randn(m.num_features)
            m.running_var = torch.exp(spread * torch.randn(m.num_features))
    return model


def _images(n: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(16, 1, 16, 16, generator=g) for _ in range(n // 16)]


def _spread(weight: torch.Tensor, groups: int, output: bool) -> float:
    """How unequal a layer's channel ranges are: largest over median."""
    r = output_ranges(weight) if output else input_ranges(weight, groups)
    return float(r.max() / r.median())


def test_equalization_is_exact_in_float_and_evens_out_depthwise_ranges():
    # In float64, so that "exact" can be checked tightly through twenty rescaled layers.
    work = fold_batchnorm(_mobilenet().features).double()
    modules = dict(work.named_modules())
    pairs = find_pairs(work)
    depthwise = [p for p in pairs if modules[p[0]].groups > 1 or modules[p[1]].groups > 1]
    assert len(depthwise) == len(pairs) and len(pairs) >= 10  # every pair has a depthwise conv
    x = torch.rand(8, 1, 28, 28, dtype=torch.float64)
    with torch.no_grad():
        before = work(x)
    spread = {p: [_spread(modules[p[0]].weight, 1, True)] for p in pairs}

    result = equalize_(work)

    with torch.no_grad():
        torch.testing.assert_close(work(x), before, rtol=1e-9, atol=1e-12)
    assert result.pairs == pairs and result.sweeps > 1
    for a, b in pairs:
        r1 = output_ranges(modules[a].weight)
        r2 = input_ranges(modules[b].weight, modules[b].groups)
        torch.testing.assert_close(r1, r2, rtol=1e-2, atol=0)  # each channel balanced
        spread[(a, b)].append(_spread(modules[a].weight, 1, True))
    # The producer layers' channel ranges end up closer together (geometric mean over pairs).
    logs = torch.tensor([[float(torch.tensor(s).log()) for s in v] for v in spread.values()])
    assert logs[:, 1].mean() < logs[:, 0].mean()


def test_equalization_stops_at_a_branch_and_skips_ignored_layers():
    work = fold_batchnorm(_mobilenet().features)
    names = {n for pair in find_pairs(work) for n in pair}
    # Block 1's input also feeds the residual add: the stem may not be rescaled through it.
    assert "0.0" not in names
    ignored = find_pairs(work, ignore={"2.conv.3"})
    assert not any("2.conv.3" in pair for pair in ignored)
    assert len(ignored) == len(find_pairs(work)) - 2


def _mean_error(model: nn.Module, reference: nn.Module, batches: list[torch.Tensor]) -> float:
    """|E[float − int8]| of each logit, averaged: the bias bias correction removes."""
    with torch.no_grad():
        diff = torch.cat([reference(x) - model(x) for x in batches])
    return float(diff.mean(dim=0).abs().mean())


def test_bias_correction_reduces_the_mean_output_error_on_held_out_data():
    model = _mobilenet()
    calib, held_out = _images(128, seed=0), _images(256, seed=1)
    plain, corrected = copy.deepcopy(model), copy.deepcopy(model)
    quantize_(plain, Int8StaticConfig(num_samples=128), data=calib)
    config = Int8StaticConfig(num_samples=128, bias_correction=True)
    report = quantize_(corrected, config, data=calib)
    assert report.extra["repairs"]["features"]["bias_corrected_layers"] >= 20
    # 0.0273 against 0.0328 when written.
    assert _mean_error(corrected, model, held_out) < 0.9 * _mean_error(plain, model, held_out)


def test_adaround_beats_nearest_on_a_layer_of_a_real_model():
    # A depthwise conv of the net, its inputs the net's own activations at that layer.
    work = fold_batchnorm(_mobilenet().features)
    conv = work.get_submodule("2.conv.3")
    seen = []
    handle = conv.register_forward_pre_hook(lambda _m, a: seen.append(a[0]))
    with torch.no_grad():
        work(torch.rand(192, 1, 16, 16))
    handle.remove()
    x = seen[0]
    train, test = x[:128], x[128:]
    weight = conv.weight.detach()
    scales = output_ranges(weight) / 127.5  # torch.ao's symmetric per-channel scales

    def layer(inputs, w):
        return torch.nn.functional.conv2d(
            inputs, w, conv.bias, conv.stride, conv.padding, 1, conv.groups
        )

    with torch.no_grad():
        target = layer(train, weight)
    codes = learn_rounding(weight, scales, -128, 127, layer, train, target, iterations=300)
    nearest = nearest_codes(weight, scales, -128, 127)
    assert ((codes - weight / scales.view(-1, 1, 1, 1)).abs() < 1).all()  # up or down only

    def error(c):
        with torch.no_grad():
            return float(
                (layer(test, c * scales.view(-1, 1, 1, 1)) - layer(test, weight)).pow(2).mean()
            )

    assert error(codes) < 0.9 * error(nearest)


def test_adaround_lowers_each_region_layers_reconstruction_error():
    model = _mobilenet()
    report = quantize_(
        model, Int8StaticConfig(rounding="adaround", rounding_iterations=60), data=_images(64, 0)
    )
    repairs = report.extra["repairs"]["features"]
    assert repairs["rounded_layers"] == len(repairs["error_before"]) >= 20
    before, after = repairs["error_before"], repairs["error_after"]
    assert sum(after.values()) < sum(before.values())


def test_repairs_default_off_and_config_round_trips():
    plain = Int8StaticConfig()
    assert not plain.repaired and plain.rounding == "nearest"
    config = Int8StaticConfig(**ALL, rounding_iterations=50, num_samples=64)
    assert config.repaired
    assert Int8StaticConfig(**config.to_dict()) == config
    recipe = Recipe.from_dict({"steps": [{"quantize": {"method": "int8-static", **ALL}}]})
    assert Recipe.from_yaml(recipe.to_yaml()) == recipe


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"rounding": "adaround", "num_samples": 8}, "num_samples: rounding='adaround'"),
        ({"rounding": "stochastic"}, "rounding"),
        ({"rounding_iterations": 0}, "rounding_iterations"),
        ({"equalize": "sometimes"}, "equalize"),
    ],
)
def test_bad_config_names_the_field(fields, match):
    with pytest.raises(ValidationError, match=match):
        Int8StaticConfig(**fields)


def test_adaround_without_data_is_one_line_and_model_untouched():
    model = _mobilenet()
    state = copy.deepcopy(model.state_dict())
    with pytest.raises(PrunekitError, match="data: int8-static needs calibration batches"):
        quantize_(model, Int8StaticConfig(rounding="adaround"))
    with pytest.raises(PrunekitError, match="never ran on the calibration data"):
        quantize_(model, Int8StaticConfig(rounding="adaround"), data=[])
    assert swaps.swap_record(model) == []
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_cli_rejects_adaround_without_enough_samples(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "steps:\n  - quantize: {method: int8-static, rounding: adaround, num_samples: 4}\n"
    )
    code = main(["run", str(recipe), "--model", "builtin:digits-cnn", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert "num_samples: rounding='adaround'" in err and "at least 32" in err
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_cli_adaround_without_data_exits_2(factory, tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("steps:\n  - quantize: {method: int8-static, rounding: adaround}\n")
    out = tmp_path / "o"
    assert main(["run", str(recipe), "--model", f"py:{factory}:make", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --data:") and "pass --data SPEC" in err
    assert len(err.splitlines()) == 1 and not out.exists()


def test_cli_recipe_runs_the_repairs(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path / "cache"))  # digits-cnn: seconds
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "steps:\n  - quantize: {method: int8-static, equalize: true, bias_correction: true, "
        "rounding: adaround, rounding_iterations: 20, num_samples: 64}\n"
    )
    out = tmp_path / "o"
    assert main(["run", str(recipe), "--model", "builtin:digits-cnn", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())["steps"][0]["report"]
    assert report["config"]["rounding"] == "adaround"
    features = report["repairs"]["features"]
    assert features["equalized_pairs"] == 2 and features["rounded_layers"] == 3
    assert sum(features["error_after"].values()) < sum(features["error_before"].values())


def test_save_load_of_a_repaired_model_gives_identical_outputs(tmp_path):
    repaired = _mobilenet()
    config = Int8StaticConfig(**ALL, rounding_iterations=20, num_samples=32)
    pk.quantize_(repaired, config, data=_images(32, 0))
    assert isinstance(repaired.features, StaticInt8Region)
    assert swaps.swap_record(repaired)[0]["args"]["folded"] is True
    x = _images(16, 5)[0]
    with torch.no_grad():
        out = repaired(x)
    pk.save(repaired, tmp_path / "m")
    loaded = pk.load(tmp_path / "m")
    with torch.no_grad():
        assert torch.equal(loaded(x), out)


def test_a_repaired_model_exports_to_onnx(tmp_path):
    # Two stages: onnxruntime and torch round requantized activations differently, and over
    # the full net's 25 int8 layers that alone nears the export's 30 dB check (plain int8 too).
    model = _mobilenet(spread=0.5, stages=((1, 16, 1, 1), (4, 24, 2, 2)))
    config = Int8StaticConfig(**ALL, rounding_iterations=20, num_samples=32)
    pk.quantize_(model, config, data=_images(32, 0))
    x = _images(16, 5)[0]
    report = export_onnx(model, tmp_path / "q.onnx", x)
    assert report.quantize == "int8-static"
    assert report.quantized_sqnr_db >= 30


def test_a_damaged_folded_flag_is_refused():
    from prunekit.quantize.static import _build_static

    with pytest.raises(PrunekitError, match="folded must be true or false"):
        _build_static(nn.Sequential(nn.Conv2d(1, 2, 3)), {"input_shape": [1, 8, 8], "folded": 1})
