"""SmoothQuant: scales folded from norms into the layers reading them, then int8-dynamic."""

import json

import pydantic
import pytest
import torch
from torch import nn

import prunekit as pk
from prunekit.errors import PrunekitError
from prunekit.quantize import Int8DynamicConfig, Int8Linear, SmoothQuantConfig, quantize_, smooth_
from prunekit.quantize.smooth import flatness, smoothing_scales
from prunekit.recipe import Recipe
from prunekit.registry import get_method
from tests import hf_zoo, zoo

CONFIG = SmoothQuantConfig(min_features=0, num_samples=8)


class PreNorm(nn.Module):
    """A pre-norm MLP block wide enough for int8-dynamic's default ``min_features``, with two
    outlier channels in its norm's output."""

    def __init__(self, dim: int = 256) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.norm = nn.LayerNorm(dim)
        self.up, self.down = nn.Linear(dim, 2 * dim), nn.Linear(2 * dim, dim)
        self.head = nn.Linear(dim, 10)
        with torch.no_grad():
            self.norm.weight[:2] = 40.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x + self.down(torch.relu(self.up(self.norm(x)))))


def _text(n: int = 4, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(3, hf_zoo.VOCAB, (2, 8), generator=g)
        out.append({"input_ids": ids, "attention_mask": torch.ones_like(ids)})
    return out


@torch.no_grad()
def _logits(model, batch):
    return model(**batch).logits


@torch.no_grad()
def _with_outliers(model, factor: float = 40.0):
    """A few channels of every norm's output made ``factor`` times larger: the outliers real
    transformers grow, which leave int8-dynamic's per-batch scale few levels for the rest."""
    for name, module in model.named_modules():
        if name.endswith("layernorm"):
            module.weight[:2] *= factor
    return model


def _norm_ranges(model, batches):
    """Per-channel max |output| of every norm, on ``batches``."""
    found, hooks = {}, []
    for name, module in model.named_modules():
        if name.endswith("layernorm"):

            def record(_, __, out, name=name):
                m = out.abs().reshape(-1, out.shape[-1]).amax(0)
                found[name] = torch.maximum(found.get(name, m), m)

            hooks.append(module.register_forward_hook(record))
    with torch.no_grad():
        for b in batches:
            model(**b)
    for h in hooks:
        h.remove()
    return found


def test_scales_follow_the_formula():
    act, w = torch.tensor([4.0, 1.0, 0.0, 9.0]), torch.tensor([1.0, 4.0, 2.0, 0.0])
    s = smoothing_scales(act, w, 0.5)
    torch.testing.assert_close(s, torch.tensor([2.0, 0.5, 1.0, 1.0]))  # dead channels keep 1
    torch.testing.assert_close(smoothing_scales(act[:2], w[:2], 1.0), act[:2])
    assert flatness(torch.tensor([1.0, 1.0])) == 1.0


@pytest.mark.parametrize("build", [hf_zoo.llama_gqa, hf_zoo.gpt2], ids=["llama", "gpt2"])
def test_smoothing_alone_keeps_the_float_outputs(build):
    model = _with_outliers(build())
    batch = _text(1, seed=9)[0]
    before = _logits(model, batch)
    report = smooth_(model, CONFIG, _text())
    assert report.groups, "nothing was smoothed"
    changed = [g for g in report.groups if not torch.allclose(g.scales, torch.ones(1))]
    assert changed
    torch.testing.assert_close(_logits(model, batch), before, rtol=1e-4, atol=1e-4)


def test_llama_norms_feed_qkv_and_gate_up():
    report = smooth_(hf_zoo.llama_gqa(), CONFIG, _text())
    groups = {g.norm: [r.rpartition(".")[2] for r in g.readers] for g in report.groups}
    assert groups["model.layers.0.input_layernorm"] == ["q_proj", "k_proj", "v_proj"]
    assert groups["model.layers.1.post_attention_layernorm"] == ["gate_proj", "up_proj"]
    assert "model.norm" not in groups  # feeds the tied LM head, which stays in float
    assert "not a norm's output" in report.unsmoothed["model.layers.0.self_attn.o_proj"]


def test_hand_written_pre_norm_block():
    model, batches = zoo.build("head-attention")
    model.eval()
    x = batches[0][0]
    with torch.no_grad():
        before = model(x)
    report = smooth_(model, CONFIG, batches)
    assert {g.norm: g.readers for g in report.groups} == {
        "norm1": ("q", "k", "v"),
        "norm2": ("gate", "up"),
    }
    with torch.no_grad():
        torch.testing.assert_close(model(x), before, rtol=1e-4, atol=1e-5)


def test_smoothed_norm_outputs_are_flatter():
    model = _with_outliers(hf_zoo.llama_gqa())
    calib = _text()
    before = _norm_ranges(model, calib)
    report = smooth_(model, CONFIG, calib)
    after = _norm_ranges(model, calib)
    assert {g.norm for g in report.groups} == set(before)
    for name in before:
        assert flatness(after[name]) < flatness(before[name]) / 2, name
    for g in report.groups:
        assert g.flatness_after < g.flatness_before


def test_int8_error_is_lower_with_smoothing():
    reference = _with_outliers(hf_zoo.llama_gqa())
    calib, held_out = _text(), _text(4, seed=1)
    # Only the layers reading a norm: the others (o/down projections) add the same error to
    # both and are what smoothing cannot reach.
    readers = {"min_features": 0, "targets": ["re:(q|k|v|gate|up)_proj$"]}

    def error(config, data):
        model = _with_outliers(hf_zoo.llama_gqa())
        quantize_(model, config, data=data)
        return sum(float((_logits(model, b) - _logits(reference, b)).norm()) for b in held_out)

    plain = error(Int8DynamicConfig(**readers), None)
    smoothed = error(SmoothQuantConfig(**readers), calib)
    assert smoothed < 0.5 * plain, (smoothed, plain)


def test_post_norm_bert_is_left_unsmoothed_and_says_why():
    model, plain = hf_zoo.bert(), hf_zoo.bert()
    batch = hf_zoo.text_inputs()
    report = quantize_(model, CONFIG, data=[batch])
    quantize_(plain, Int8DynamicConfig(min_features=0))
    assert report.smoothing.groups == []
    why = report.smoothing.unsmoothed["encoder.layer.0.intermediate.dense"]
    assert "attention.output.LayerNorm" in why and "residual" in why
    with torch.no_grad():
        assert torch.equal(model(**batch)[0], plain(**batch)[0])


def test_a_norm_that_is_not_weight_times_normalized_is_refused():
    model = hf_zoo.gemma()  # its RMSNorm multiplies by (1 + weight)
    batch = _text(1)[0]
    before = _logits(model, batch)
    report = smooth_(model, CONFIG, [batch])
    assert report.groups == []
    assert any("cannot carry the scale" in why for why in report.unsmoothed.values())
    assert torch.equal(_logits(model, batch), before)


def test_quantized_layers_are_int8_and_the_report_lists_the_groups():
    model = hf_zoo.llama_gqa()
    report = quantize_(model, CONFIG, data=_text())
    assert isinstance(model.model.layers[0].self_attn.q_proj, Int8Linear)
    data = json.loads(json.dumps(report.to_dict()))
    assert data["method"] == "smoothquant"
    assert len(data["smoothing"]["groups"]) == 4
    assert "4 norms smoothed into 10 layers" in str(report)


def test_ignored_norm_and_layer_stay_untouched():
    model = hf_zoo.llama_gqa()
    norm = model.model.layers[0].input_layernorm.weight.clone()
    mlp = model.model.layers[0].post_attention_layernorm.weight.clone()
    ignore = ["model.layers.0.input_layernorm", "model.layers.0.mlp.up_proj"]
    report = smooth_(model, SmoothQuantConfig(min_features=0, ignore=ignore), _text())
    assert torch.equal(model.model.layers[0].input_layernorm.weight, norm)
    assert torch.equal(model.model.layers[0].post_attention_layernorm.weight, mlp)
    assert "in ignore" in report.unsmoothed["model.layers.0.self_attn.q_proj"]
    assert "not quantized" in report.unsmoothed["model.layers.0.mlp.gate_proj"]
    assert {g.norm for g in report.groups} == {
        "model.layers.1.input_layernorm",
        "model.layers.1.post_attention_layernorm",
    }


def test_config_round_trips():
    config = SmoothQuantConfig(alpha=0.75, num_samples=32, ignore=["re:lm_head"])
    assert SmoothQuantConfig.model_validate(json.loads(json.dumps(config.to_dict()))) == config
    recipe = Recipe.from_yaml("steps:\n  - quantize: {method: smoothquant, alpha: 0.75}\n")
    assert recipe.steps[0].config == SmoothQuantConfig(alpha=0.75)
    assert Recipe.from_yaml(recipe.to_yaml()).steps[0].config == SmoothQuantConfig(alpha=0.75)
    assert get_method("smoothquant").data == "calibration"


@pytest.mark.parametrize(
    ("fields", "named"),
    [({"alpha": 1.5}, "alpha"), ({"alpha": -0.1}, "alpha"), ({"num_samples": 0}, "num_samples")],
)
def test_bad_fields_are_rejected(fields, named):
    with pytest.raises(pydantic.ValidationError, match=named):
        SmoothQuantConfig(**fields)


def test_no_data_is_a_one_line_error_and_the_model_is_unchanged():
    model = hf_zoo.llama_gqa()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for call in (lambda: quantize_(model, CONFIG), lambda: smooth_(model, CONFIG, None)):
        with pytest.raises(PrunekitError, match="data") as raised:
            call()
        assert "\n" not in str(raised.value)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(TypeError, match="SmoothQuantConfig"):
        smooth_(model, Int8DynamicConfig(), _text())


def test_save_load_gives_identical_outputs(tmp_path):
    model = _with_outliers(hf_zoo.llama_gqa())
    quantize_(model, CONFIG, data=_text())
    batch = _text(1, seed=3)[0]
    expected = _logits(model, batch)
    loaded = pk.load(pk.save(model, tmp_path / "sq"))
    assert torch.equal(_logits(loaded, batch), expected)


def test_each_runtime_runs_the_smoothed_int8_model():
    model = PreNorm().eval()
    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(8, 256, generator=g), torch.randint(0, 10, (8,), generator=g))]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = pk.measure_runtimes(
        model,
        data,
        runtimes=("torch", "executorch"),
        batch_sizes=(1,),
        latency=False,
        quantize="smoothquant",
    )
    rows = {r.runtime: r for r in report.runtimes}
    assert all(r.error is None for r in rows.values()), [r.error for r in rows.values()]
    assert rows["torch"].note == "smoothquant by quantize_"
    assert rows["executorch"].note.startswith("int8-dynamic XNNPACK")
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    with pytest.raises(PrunekitError, match="quantize='smoothquant' calibrates"):
        pk.measure_runtimes(model, example_inputs=data[0][0], quantize="smoothquant")


def test_smoothed_int8_model_exports_to_onnx(tmp_path):
    model = PreNorm().eval()
    x = torch.randn(4, 256, generator=torch.Generator().manual_seed(1))
    report = quantize_(model, SmoothQuantConfig(), data=[x])
    assert [g.norm for g in report.smoothing.groups] == ["norm"]
    exported = pk.export_onnx(model, tmp_path / "sq.onnx", example_inputs=(x,))
    assert exported.quantize == "int8-dynamic" and exported.quantized_sqnr_db > 30


def test_cli_recipe_needs_data_and_runs_with_it(factory, tmp_path, capsys):
    from prunekit.cli import main

    recipe = tmp_path / "sq.yaml"
    recipe.write_text("steps:\n  - quantize: {method: smoothquant, min_features: 0}\n")
    run = ["run", str(recipe), "--model", f"py:{factory}:make"]
    assert main([*run, "--out", str(tmp_path / "no-data")]) == 2
    err = capsys.readouterr().err.strip()
    assert "--data" in err and "\n" not in err
    assert not (tmp_path / "no-data" / "model").exists()
    assert main([*run, "--data", "digits", "--out", str(tmp_path / "out")]) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert "smoothquant" in json.dumps(report)
