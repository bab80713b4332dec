"""``prunekit prune --pattern channel|head``: plans, real runs, artifacts and one-line errors."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_model

import prunekit as pk
from prunekit.cli import main
from prunekit.data import load_data
from prunekit.models import DigitsCNN
from prunekit.specs import load_model

CHANNEL = ["--method", "magnitude", "--pattern", "channel", "--sparsity", "0.5"]


@pytest.fixture
def digits_cnn(tmp_path):
    """builtin:digits-cnn with seeded untrained weights (no training run needed)."""
    torch.manual_seed(0)
    weights = tmp_path / "digits-cnn.safetensors"
    save_model(DigitsCNN(), str(weights))
    return ["--model", "builtin:digits-cnn", "--weights", str(weights), "--data", "digits"]


def _test_images() -> torch.Tensor:
    return next(iter(load_data("digits").loader("test", batch_size=64)))[0]


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path, capsys, digits_cnn):
    out = tmp_path / "o"
    assert main(["prune", *digits_cnn, *CHANNEL, "--dry-run", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "would remove (dry run)" in printed and "nothing was changed or written" in printed
    for group in ("features.0.0", "features.1.0", "features.3.0", "fc1"):
        assert group in printed
    assert not out.exists()

    assert main(["prune", *digits_cnn, *CHANNEL, "--dry-run", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)["prune"]
    assert plan["applied"] is False and plan["params_after"] < plan["params_before"]
    assert {g["name"]: (g["before"], g["after"]) for g in plan["groups"]} == {
        "features.0.0": (32, 16),
        "features.1.0": (64, 32),
        "features.3.0": (64, 32),
        "fc1": (256, 128),
    }
    assert sorted(p.name for p in tmp_path.iterdir()) == ["digits-cnn.safetensors"]


def test_dry_run_of_unstructured_pruning_prints_per_layer_sparsity(tmp_path, capsys, digits_cnn):
    out = tmp_path / "o"
    argv = ["prune", *digits_cnn, "--method", "magnitude", "--sparsity", "0.5", "--dry-run"]
    assert main([*argv, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "magnitude (dry run)" in printed and "nothing was changed or written" in printed
    assert not out.exists()
    assert main([*argv, "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)["prune"]
    assert plan["applied"] is False and plan["sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert {layer["name"] for layer in plan["layers"]} >= {"fc1"}


def test_round_to_and_min_channels_shape_the_plan(capsys, digits_cnn):
    argv = ["prune", *digits_cnn, *CHANNEL[:4], "--sparsity", "0.9", "--dry-run", "--json"]
    assert main([*argv, "--round-to", "8", "--min-channels", "24"]) == 0
    groups = json.loads(capsys.readouterr().out)["prune"]["groups"]
    assert all(g["after"] % 8 == 0 and g["after"] >= 24 for g in groups)


def test_channel_pruning_writes_an_artifact_with_in_memory_outputs(tmp_path, capsys, digits_cnn):
    out = tmp_path / "run"
    assert main(["prune", *digits_cnn, *CHANNEL, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "removed" in printed and "Before / after" in printed
    report = json.loads((out / "report.json").read_text())
    assert report["prune"]["applied"] and "fc1" in (out / "report.md").read_text()

    loaded = pk.load(out / "model")  # builtin:digits-cnn rebuilt by name, record replayed
    params = sum(p.numel() for p in loaded.parameters())
    assert params == report["prune"]["params_after"] == report["comparison"]["after"]["params"]
    # The same pruning in memory: magnitude scores do not depend on the traced batch.
    net, _ = load_model("builtin:digits-cnn", weights=digits_cnn[3])
    x = _test_images()
    pk.prune_(net, pk.MagnitudeConfig(pattern="channel", sparsity=0.5), example_inputs=x)
    with torch.no_grad():
        assert torch.equal(loaded(x), net(x))


def test_bn_scale_to_a_macs_target(tmp_path, capsys, digits_cnn):
    argv = ["prune", *digits_cnn, "--method", "bn-scale", "--macs-reduction", "2"]
    assert main([*argv, "--out", str(tmp_path / "run"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["config"]["pattern"] == "channel" and report["config"]["macs_reduction"] == 2.0
    assert report["prune"]["macs_reduction"] >= 2.0
    assert any("no BatchNorm scale" in s for s in report["prune"]["skipped"].values())  # fc1
    loaded = pk.load(tmp_path / "run" / "model")
    assert sum(p.numel() for p in loaded.parameters()) == report["prune"]["params_after"]


def test_prune_to_a_measured_speed_up(tmp_path, capsys, digits_cnn):
    argv = ["prune", *digits_cnn, "--method", "magnitude", "--pattern", "channel"]
    assert main([*argv, "--latency-reduction", "1.5", "--out", str(tmp_path / "r"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)["prune"]
    assert report["speedup"] is not None and len(report["latency_tried"]) == 7
    assert report["params_after"] < report["params_before"]
    loaded = pk.load(tmp_path / "r" / "model")
    assert sum(p.numel() for p in loaded.parameters()) == report["params_after"]


def test_a_user_factory_pruned_by_channel_loads_into_a_fresh_instance(tmp_path, capsys, factory):
    out = tmp_path / "run"
    spec = f"py:{factory}:make"
    argv = ["prune", "--model", spec, *CHANNEL, "--data", "digits", "--out", str(out)]
    assert main(argv) == 0, capsys.readouterr().err
    net, _ = load_model(spec)
    x = _test_images()
    pk.prune_(net, pk.MagnitudeConfig(pattern="channel", sparsity=0.5), example_inputs=x)
    loaded = pk.load(out / "model", model=load_model(spec)[0])
    assert loaded[1].out_features == 16
    with torch.no_grad():
        assert torch.equal(loaded(x), net(x))


def test_head_pruning_a_hugging_face_model_on_text(tmp_path, capsys, gpt2_folder):
    folder, text = gpt2_folder
    out = tmp_path / "run"
    argv = ["prune", "--model", f"hf:{folder}", "--method", "magnitude", "--pattern", "head"]
    argv += ["--sparsity", "0.5", "--data", f"text:{text}", "--seq-len", "16"]
    assert main([*argv, "--dry-run", "--json"]) == 0, capsys.readouterr().err
    plan = json.loads(capsys.readouterr().out)["prune"]
    assert {(g["kind"], g["before"], g["after"]) for g in plan["groups"]} == {("head", 2, 1)}

    assert main([*argv, "--out", str(out), "--json"]) == 0, capsys.readouterr().err
    report = json.loads(capsys.readouterr().out)
    structure = pk.artifact.io.read_manifest(out / "model")["structure"]
    assert structure["from_pretrained"] is False  # GPT-2's head size is n_embd / n_head
    loaded = pk.load(out / "model")
    assert [h.attn.num_heads for h in loaded.transformer.h] == [1, 1]
    assert sum(p.numel() for p in loaded.parameters()) == report["prune"]["params_after"]
    net, _ = load_model(f"hf:{folder}")
    ids = {"input_ids": torch.arange(3, 19).reshape(2, 8) % 30 + 3}
    pk.prune_(net, pk.MagnitudeConfig(pattern="head", sparsity=0.5), example_inputs=ids)
    with torch.no_grad():
        assert torch.equal(loaded(**ids).logits, net(**ids).logits)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--method", "magnitude", "--pattern", "head"], "nothing in this model can be removed"),
        (
            [*CHANNEL, "--finetune-epochs", "1", "--schedule", "agp"],
            "structured pruning is applied in one shot",
        ),
        (["--method", "bn-scale", "--pattern", "2:4"], "bn-scale supports pattern 'channel'"),
        (["--method", "wanda", "--pattern", "channel"], "wanda supports pattern"),
    ],
)
def test_bad_structured_input_exits_2_with_one_line(tmp_path, capsys, digits_cnn, args, message):
    out = tmp_path / "o"
    assert main(["prune", *digits_cnn, *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert not out.exists()
