"""Recipes: every step validated before anything runs; the resolved recipe round-trips."""

from pathlib import Path

import pytest
import yaml

import prunekit as pk
from prunekit.recipe import Recipe, RecipeError

RECIPES = Path(__file__).resolve().parents[2] / "recipes"

API_EXAMPLE = """
steps:
  - prune: {method: magnitude, sparsity: 0.9, scope: global}   # any registered method + fields
  - finetune: {epochs: 2, lr: 0.001, distill: true}            # the original model teaches
  - share: {method: kmeans, bits: 5}
  - finetune: {epochs: 1}
  - quantize: {method: int8-dynamic}
  - measure: {}
"""


def _error(text: str) -> RecipeError:
    with pytest.raises(RecipeError) as info:
        Recipe.from_yaml(text)
    return info.value


def test_the_documented_recipe_validates_with_defaults_filled_in():
    recipe = Recipe.from_yaml(API_EXAMPLE)
    assert [s.verb for s in recipe] == ["prune", "finetune", "share", "finetune", "quantize",
                                        "measure"]  # fmt: skip
    prune = recipe.steps[0]
    assert isinstance(prune.config, pk.MagnitudeConfig)
    assert prune.config.sparsity == 0.9 and prune.config.scope == "global"
    assert recipe.steps[1].options.distill is True and recipe.steps[3].options.epochs == 1
    assert isinstance(recipe.steps[4].config, pk.Int8DynamicConfig)
    resolved = recipe.to_dict()["steps"]
    assert resolved[2]["share"]["init"] == "linear"  # a default, written out
    assert resolved[0]["prune"]["method"] == "magnitude"


@pytest.mark.parametrize(
    ("text", "step", "verb", "field", "words"),
    [
        ("- prun: {method: magnitude}", 1, None, None, ["step 1", "'prun'", "'prune'"]),
        ("- finetune: {epochs: 1}\n- finetune: {epoch: 2}", 2, "finetune", "epoch",
         ["step 2 (finetune)", "'epoch'", "did you mean 'epochs'", "accepted fields"]),
        ("- prune: {method: magnitude, sparsity: 1.5}", 1, "prune", "sparsity",
         ["step 1 (prune, method magnitude)", "'sparsity'", "[0, 1)", "1.5"]),
        ("- prune: {method: magnitude, scope: glob}", 1, "prune", "scope",
         ["step 1", "'scope'", "'layer' or 'global'", "'glob'"]),
        ("- finetune: {optimizer: lion}", 1, "finetune", "optimizer",
         ["'optimizer'", "'adamw', 'adam' or 'sgd'", "'lion'"]),
        ("- finetune: {lr_schedule: step}", 1, "finetune", "lr_schedule",
         ["'lr_schedule'", "'cosine', 'constant' or 'linear'", "'step'"]),
        ("- finetune: {warmup: 1.5}", 1, "finetune", "warmup", ["'warmup'", "1.5"]),
        ("- prune: {method: kmeans}", 1, "prune", "method",
         ["step 1 (prune)", "'kmeans' is a share method, not a prune method", "magnitude"]),
        ("- quantize: {method: int9}", 1, "quantize", "method",
         ["'int9' is not registered", "int8-dynamic"]),
        ("- prune: {sparsity: 0.5}", 1, "prune", "method",
         ["field 'method' is required", "magnitude", "wanda"]),
        ("- prune: {method: movement, sparsity: 0.5}", 1, "prune", "schedule",
         ["'schedule'", "movement", "'agp'"]),
        ("- prune: {method: wanda, schedule: agp, epochs: 1}", 1, "prune", "schedule",
         ["'schedule'", "wanda", "'oneshot'"]),
        ("- prune: {method: magnitude, schedule: cubic, epochs: 1}", 1, "prune", "schedule",
         ["'schedule'", "oneshot, iterative, agp", "'cubic'"]),
        ("- prune: {method: wanda, pattern: 2:4}", 1, "prune", "pattern",
         ["'pattern'", "got 124", "'2:4'"]),
        ("- export: {onnx: ../elsewhere.onnx}", 1, "export", "onnx",
         ["step 1 (export)", "'onnx'", "inside the output directory"]),
        ("- measure: {batch_sizes: [0]}", 1, "measure", "batch_sizes", ["'batch_sizes'", "≥ 1"]),
        ("- prune", 1, None, None, ["step 1", "expected one verb"]),
    ],
)  # fmt: skip
def test_errors_name_the_step_the_field_and_what_is_accepted(text, step, verb, field, words):
    err = _error("steps:\n" + "\n".join("  " + line for line in text.splitlines()))
    assert (err.step, err.verb, err.field) == (step, verb, field)
    for word in words:
        assert word in str(err), (word, str(err))


def test_recipe_level_errors():
    assert "non-empty list" in str(_error("steps: []"))
    assert "'seed'" in str(_error("steps: [{measure: {}}]\nseed: 1"))
    assert "not valid YAML" in str(_error("steps: [{prune: {method: magnitude}"))
    with pytest.raises(RecipeError, match="no such file"):
        Recipe.from_yaml("does-not-exist.yaml")


def _one_step(info: pk.MethodInfo) -> dict:
    fields = {"method": info.name}
    if info.kind == "prune" and getattr(info.config, "needs_training", False):
        fields.update(schedule="agp", epochs=1)
    return {info.kind: fields}


@pytest.mark.parametrize("info", pk.methods(), ids=lambda m: m.name)
def test_every_registered_method_round_trips_through_the_resolved_yaml(info):
    recipe = Recipe([_one_step(info)])
    text = recipe.to_yaml()
    again = Recipe.from_yaml(text)
    assert again == recipe and again.digest() == recipe.digest()
    assert yaml.safe_load(text) == recipe.to_dict()
    assert type(again.steps[0].config) is info.config


def test_round_trip_keeps_patterns_as_strings_and_every_verb():
    recipe = Recipe.from_yaml(API_EXAMPLE + "  - export: {onnx: out/m.onnx}\n"
                              "  - prune: {method: wanda, pattern: '2:4'}\n")  # fmt: skip
    again = Recipe.from_yaml(recipe.to_yaml())
    assert again == recipe
    assert again.steps[-1].config.pattern == "2:4"
    assert again.steps[-2].options.onnx == "out/m.onnx"


def test_digest_changes_with_any_field_and_overrides_are_validated():
    recipe = Recipe.from_yaml(API_EXAMPLE)
    shorter = recipe.with_overrides({"2.epochs": 1})
    assert shorter.steps[1].options.epochs == 1 and recipe.steps[1].options.epochs == 2
    assert shorter.digest() != recipe.digest()
    assert recipe.with_overrides({"2.epochs": 2}).digest() == recipe.digest()
    with pytest.raises(RecipeError, match=r"step 2 .*'epochs'"):
        recipe.with_overrides({"2.epochs": 0})
    with pytest.raises(RecipeError, match=r"steps 1\.\.6"):
        recipe.with_overrides({"9.epochs": 1})
    with pytest.raises(RecipeError, match=r"STEP\.FIELD"):
        recipe.with_overrides({"epochs": 1})


@pytest.mark.parametrize("path", sorted(RECIPES.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_recipes_validate_and_say_how_to_run_them(path):
    recipe = Recipe.from_yaml(path)
    assert Recipe.from_yaml(recipe.to_yaml()) == recipe
    header = path.read_text().split("steps:")[0]
    assert f"prunekit run recipes/{path.name} --model builtin:" in header
