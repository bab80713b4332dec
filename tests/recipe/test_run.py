"""run_recipe on builtin:digits-cnn: outputs, per-step rows, and resuming after an interruption."""

import json

import pytest
import torch

import prunekit as pk
import prunekit.recipe.runner as runner
from prunekit.recipe import Evaluation, Recipe, RecipeError, run_recipe
from prunekit.recipe.state import weights_digest

# Short timings: these tests check the outputs, not the machine's speed.
QUICK = Evaluation(batch_sizes=(1,), min_run_time=0.05, step_latency=False)

RUN_STEP = runner.run_step

PIPELINE = """
steps:
  - prune: {method: magnitude, sparsity: 0.8, scope: global}
  - finetune: {epochs: 1, distill: true}
  - share: {method: kmeans, bits: 4}
  - finetune: {epochs: 1, lr: 0.0001}
  - export: {onnx: model.onnx}
  - measure: {batch_sizes: [1], min_run_time: 0.05}
"""


def _outputs(model, loaders):
    x = next(iter(loaders()[1]))[0][:64]
    with torch.no_grad():
        return model.eval()(x)


class Interrupt:
    """Replaces run_step: raises KeyboardInterrupt (a user's Ctrl-C) when step ``at`` starts;
    records the steps that ran."""

    def __init__(self, monkeypatch, at=None):
        self.at, self.ran = at, []
        monkeypatch.setattr(runner, "run_step", self)

    def __call__(self, step, model, ctx):
        if step.index == self.at:
            raise KeyboardInterrupt
        self.ran.append(step.index)
        return RUN_STEP(step, model, ctx)


@pytest.mark.slow
def test_a_run_writes_every_output_and_rows_follow_the_steps(digits_cnn, loaders, tmp_path):
    recipe = Recipe.from_yaml(PIPELINE)
    before = weights_digest(digits_cnn)
    report = run_recipe(recipe, digits_cnn, *loaders(), out=tmp_path / "run", evaluation=QUICK)
    out = tmp_path / "run"
    for name in ("model/manifest.json", "recipe.yaml", "report.json", "report.md", "model.onnx",
                 "state.json"):  # fmt: skip
        assert (out / name).is_file(), name
    assert Recipe.from_yaml(out / "recipe.yaml") == recipe
    saved = json.loads((out / "report.json").read_text())
    rows = saved["rows"]
    assert [r["verb"] for r in rows] == ["original", "prune", "finetune", "share", "finetune",
                                         "export", "measure"]  # fmt: skip
    original, pruned = rows[0], rows[1]
    assert pruned["nonzeros"] < 0.25 * original["nonzeros"]
    assert all(r["nonzeros"] <= pruned["nonzeros"] for r in rows[1:])  # masks stay applied
    assert rows[3]["artifact_bytes"] < 0.6 * rows[2]["artifact_bytes"]  # 4-bit codebooks
    assert rows[5]["nonzeros"] == rows[4]["nonzeros"]  # export leaves the model as it was
    assert all(r["accuracy"] > 0.8 for r in rows)
    assert saved["steps"][5]["report"]["params"] == rows[4]["params"]  # measure's Measurement
    assert saved["comparison"]["after"]["nonzeros"] == rows[-1]["nonzeros"]
    md = (out / "report.md").read_text()
    assert "| 3 | share | kmeans |" in md and "## Before / after" in md
    # The final model reloads exactly; the user's model is untouched and still trainable.
    reloaded = pk.load(out / "model")
    assert torch.equal(_outputs(reloaded, loaders), _outputs(report.model, loaders))
    assert weights_digest(digits_cnn) == before
    assert not any(p.is_inference() for p in digits_cnn.parameters())
    assert not any(p.is_inference() for p in report.model.parameters())


@pytest.mark.slow
def test_resume_runs_only_the_unfinished_steps_and_ends_with_the_same_model(
    digits_cnn, loaders, tmp_path, monkeypatch
):
    recipe = Recipe.from_yaml(PIPELINE.split("  - export")[0])
    whole = run_recipe(recipe, digits_cnn, *loaders(), out=tmp_path / "whole", evaluation=QUICK)

    out = tmp_path / "cut"
    stop = Interrupt(monkeypatch, at=3)
    with pytest.raises(KeyboardInterrupt):
        run_recipe(recipe, digits_cnn, *loaders(), out=out, evaluation=QUICK)
    assert stop.ran == [1, 2]
    state = json.loads((out / "state.json").read_text())
    assert [e["step"] for e in state["finished"]] == [1, 2]
    assert sorted(p.name for p in (out / "steps").iterdir()) == ["01-prune", "02-finetune"]
    # What a killed process leaves: a half-written step, under its final name and as a partial.
    (out / "steps" / "03-share").mkdir()
    (out / "steps" / "03-share" / "step.json").write_text("{")
    (out / "steps" / ".03-share.partial-x").mkdir()

    with pytest.raises(RecipeError, match="pass --resume"):
        run_recipe(recipe, digits_cnn, *loaders(), out=out, evaluation=QUICK)
    go = Interrupt(monkeypatch)
    resumed = run_recipe(recipe, digits_cnn, *loaders(), out=out, evaluation=QUICK, resume=True)
    assert go.ran == [3, 4] and resumed.resumed_steps == 2
    assert sorted(p.name for p in (out / "steps").iterdir()) == [
        "01-prune", "02-finetune", "03-share", "04-finetune"]  # fmt: skip
    torch.testing.assert_close(
        _outputs(resumed.model, loaders), _outputs(whole.model, loaders), atol=1e-4, rtol=1e-4
    )
    for a, b in zip(resumed.rows, whole.rows, strict=True):
        assert (a["verb"], a["nonzeros"], a["accuracy"]) == (
            b["verb"],
            b["nonzeros"],
            b["accuracy"],
        )


def test_resume_refuses_a_changed_recipe_model_or_setting(digits_cnn, loaders, tmp_path):
    recipe = Recipe.from_yaml("steps:\n  - prune: {method: magnitude, sparsity: 0.5}")
    out = tmp_path / "run"
    run_recipe(recipe, digits_cnn, *loaders(), out=out, evaluation=QUICK, identity={"seed": 0})
    state = (out / "state.json").read_text()
    changed = recipe.with_overrides({"1.sparsity": 0.6})
    with pytest.raises(RecipeError, match="different recipe"):
        run_recipe(changed, digits_cnn, *loaders(), out=out, resume=True, identity={"seed": 0})
    with pytest.raises(RecipeError, match="different identity"):
        run_recipe(recipe, digits_cnn, *loaders(), out=out, resume=True, identity={"seed": 1})
    other = pk.models.build("digits-cnn")
    with pytest.raises(RecipeError, match="different model"):
        run_recipe(recipe, other, *loaders(), out=out, resume=True, identity={"seed": 0})
    assert (out / "state.json").read_text() == state  # nothing was touched


def test_out_must_be_new_empty_or_an_earlier_run(digits_cnn, loaders, tmp_path):
    recipe = Recipe.from_yaml("steps:\n  - prune: {method: magnitude, sparsity: 0.5}")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    for flags in ({}, {"overwrite": True}, {"resume": True}):
        with pytest.raises(RecipeError, match="no prunekit run"):
            run_recipe(recipe, digits_cnn, *loaders(), out=mine, evaluation=QUICK, **flags)
    assert (mine / "notes.txt").read_text() == "keep me"
    out = tmp_path / "run"
    run_recipe(recipe, digits_cnn, *loaders(), out=out, evaluation=QUICK)
    (out / "steps" / "stale").mkdir()
    run_recipe(recipe, digits_cnn, *loaders(), out=out, evaluation=QUICK, overwrite=True)
    assert not (out / "steps" / "stale").exists()


@pytest.mark.parametrize(
    "first",
    [
        "prune: {method: magnitude, pattern: channel, sparsity: 0.5}",
        "share: {method: kmeans, bits: 3}",
        "quantize: {method: int8-dynamic, min_features: 1}",
    ],
    ids=["structured", "shared", "int8"],
)
def test_every_kind_of_step_reloads_for_a_resume(first, digits_cnn, loaders, tmp_path, monkeypatch):
    recipe = Recipe.from_yaml(f"steps:\n  - {first}\n  - measure: {{latency: false}}")
    whole = run_recipe(recipe, digits_cnn, *loaders(), out=tmp_path / "whole", evaluation=QUICK)
    Interrupt(monkeypatch, at=2)
    with pytest.raises(KeyboardInterrupt):
        run_recipe(recipe, digits_cnn, *loaders(), out=tmp_path / "cut", evaluation=QUICK)
    go = Interrupt(monkeypatch)
    resumed = run_recipe(
        recipe, digits_cnn, *loaders(), out=tmp_path / "cut", evaluation=QUICK, resume=True
    )
    assert go.ran == [2]
    assert type(resumed.model.fc1) is type(whole.model.fc1)
    assert resumed.rows[1]["params"] == whole.rows[1]["params"] < 1.01 * whole.rows[0]["params"]
    assert torch.equal(_outputs(resumed.model, loaders), _outputs(whole.model, loaders))


API_EXAMPLE = """
steps:
  - prune: {method: magnitude, sparsity: 0.9, scope: global}
  - finetune: {epochs: 1, lr: 0.001, distill: true}
  - share: {method: kmeans, bits: 5}
  - finetune: {epochs: 1}
  - quantize: {method: int8-dynamic, min_features: 0}
  - measure: {batch_sizes: [1], min_run_time: 0.05}
"""


@pytest.mark.slow
def test_the_public_example_recipe_shares_then_quantizes(digits_cnn, loaders, tmp_path):
    # API.md's recipe: weight-shared layers go on to int8; the result reloads exactly.
    report = run_recipe(
        Recipe.from_yaml(API_EXAMPLE), digits_cnn, *loaders(), out=tmp_path / "run",
        evaluation=QUICK,
    )  # fmt: skip
    kinds = {type(m).__name__ for m in report.model.modules()}
    assert "Int8Linear" in kinds and "SharedLinear" not in kinds
    rows = report.rows
    assert rows[-1]["accuracy"] > 0.8
    assert rows[-1]["nonzeros"] <= rows[1]["nonzeros"]  # zeros survive sharing and int8
    reloaded = pk.load(tmp_path / "run" / "model")
    assert torch.equal(_outputs(reloaded, loaders), _outputs(report.model, loaders))
