"""``prunekit run``: exit codes, outputs, --resume, and every shipped recipe end to end."""

import json
from pathlib import Path

import pytest
import torch

import prunekit.recipe.runner as runner
from prunekit.cli import main

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
RUN_STEP = runner.run_step

SMALL = """
steps:
  - prune: {method: magnitude, sparsity: 0.8, scope: global}
  - finetune: {epochs: 1, distill: true}
  - share: {method: kmeans, bits: 4}
  - measure: {batch_sizes: [1], min_run_time: 0.05}
"""


def _run(recipe: Path, out: Path, *extra: str, model: str = "builtin:digits-cnn") -> int:
    return main(["run", str(recipe), "--model", model, "--out", str(out), *extra])


def test_a_bad_recipe_exits_2_before_anything_loads_or_is_written(tmp_path, capsys, monkeypatch):
    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded before the recipe was validated")

    monkeypatch.setattr("prunekit.specs.load_model", no_loading)
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("steps:\n  - prune: {method: magnitude}\n  - finetune: {epochs: 0}\n")
    assert _run(recipe, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "step 2 (finetune)" in err and "'epochs'" in err and "got 0" in err
    assert not (tmp_path / "out").exists()
    recipe.write_text("steps:\n  - prune: {method: magnitude}\n  - finetune: {epochs: 1}\n")
    assert _run(recipe, tmp_path / "out", "--set", "2.epochz=1") == 2
    assert "unknown field 'epochz'" in capsys.readouterr().err


@pytest.mark.slow
def test_run_then_resume_after_a_crash(cache, tmp_path, capsys, monkeypatch):
    recipe = tmp_path / "small.yaml"
    recipe.write_text(SMALL)
    out = tmp_path / "run"
    ran = []

    def crash_at_share(step, model, ctx):
        if step.verb == "share":
            raise RuntimeError("simulated crash")
        ran.append(step.index)
        return RUN_STEP(step, model, ctx)

    monkeypatch.setattr(runner, "run_step", crash_at_share)
    assert _run(recipe, out, "--data", "digits") == 1
    assert "simulated crash" in capsys.readouterr().err and ran == [1, 2]

    assert _run(recipe, out, "--data", "digits") == 2
    assert "--resume" in capsys.readouterr().err
    changed = tmp_path / "changed.yaml"
    changed.write_text(SMALL.replace("bits: 4", "bits: 5"))
    assert _run(changed, out, "--data", "digits", "--resume") == 2
    assert "different recipe" in capsys.readouterr().err
    assert _run(recipe, out, "--data", "digits", "--resume", "--seed", "1") == 2
    assert "different identity" in capsys.readouterr().err

    monkeypatch.setattr(
        runner, "run_step", lambda s, m, c: (ran.append(s.index), RUN_STEP(s, m, c))[1]
    )
    ran.clear()
    assert _run(recipe, out, "--data", "digits", "--resume", "--json") == 0
    assert ran == [3, 4]
    report = json.loads(capsys.readouterr().out)
    assert report["resumed_steps"] == 2
    assert [r["verb"] for r in report["rows"]] == ["original", "prune", "finetune", "share",
                                                   "measure"]  # fmt: skip
    assert report["comparison"]["after"]["nonzeros"] < 0.25 * report["rows"][0]["nonzeros"]
    for name in ("model/manifest.json", "recipe.yaml", "report.json", "report.md"):
        assert (out / name).is_file()
    assert "Resumed after step 2" in (out / "report.md").read_text()


def _shipped(name: str, out: Path, *extra: str, model: str) -> dict:
    assert _run(RECIPES / name, out, *extra, "--json", model=model) == 0
    return json.loads((out / "report.json").read_text())


@pytest.mark.slow
def test_shipped_deep_compression_recipe(cache, tmp_path):
    # The same recipe on the small digits CNN, with fewer epochs (the benchmark runs it in full).
    quick = ["--data", "digits", "--set", "1.epochs=3", "--set", "3.epochs=1"]
    report = _shipped("deep-compression-lenet300.yaml", tmp_path / "dc", *quick,
                      model="builtin:digits-cnn")  # fmt: skip
    before, after = report["comparison"]["before"], report["comparison"]["after"]
    assert after["nonzeros"] < 0.06 * before["nonzeros"]
    assert after["artifact_bytes"] < before["artifact_bytes"] / 15
    assert after["accuracy"] > before["accuracy"] - 0.05
    assert report["recipe"]["steps"][0]["prune"]["epochs"] == 3  # the override is recorded


@pytest.mark.slow
def test_shipped_structured_kd_recipe(cache, tmp_path):
    report = _shipped("structured-kd-vgg.yaml", tmp_path / "skd", "--data", "digits",
                      "--set", "2.epochs=1", model="builtin:digits-cnn")  # fmt: skip
    before, after = report["comparison"]["before"], report["comparison"]["after"]
    assert after["macs"] <= 0.5 * before["macs"]
    assert after["params"] < before["params"]
    assert report["rows"][2]["accuracy"] > report["rows"][1]["accuracy"]  # distillation helped
    assert after["accuracy"] > before["accuracy"] - 0.05


@pytest.mark.slow
def test_shipped_minilm_recipe_on_a_tiny_encoder(tmp_path, hf_text_folder):
    # The recipe as its header says it runs on any Hugging Face encoder: here a 2-layer BERT
    # (hidden 32), so int8 is allowed on narrow layers; builtin:minilm runs in the benchmark.
    from tests import hf_zoo
    from tests.models.test_hf import VOCAB

    folder, text = hf_text_folder(hf_zoo.bert(len(VOCAB)), words_per_line=10, lines=80)
    quick = ["--data", f"text:{text}", "--seq-len", "16", "--set", "2.min_features=16"]
    report = _shipped("minilm-wanda-int8.yaml", tmp_path / "run", *quick, model=f"hf:{folder}")
    original, pruned, quantized = report["rows"][:3]
    linear = sum(
        m.weight.numel()
        for m in hf_zoo.bert(len(VOCAB)).encoder.modules()
        if isinstance(m, torch.nn.Linear)
    )
    assert original["nonzeros"] - pruned["nonzeros"] == pytest.approx(linear / 2, rel=0.01)
    assert quantized["artifact_bytes"] < pruned["artifact_bytes"]
    assert report["steps"][1]["report"]["layers"]  # int8 layers swapped in
    assert all(r["accuracy"] is None and r["metrics"] for r in report["rows"])
    fidelity = next(iter(report["comparison"]["after"]["metrics"].values()))
    assert 0.5 < fidelity < 1.0
