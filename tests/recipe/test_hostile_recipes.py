"""Recipes that ask for too much: refused early, with one short line that quotes little input."""

import pytest

import prunekit.recipe.recipe as recipe_module
from prunekit.recipe import Recipe, RecipeError
from prunekit.recipe.bounded_yaml import MAX_BYTES

# An error line that quotes at most a short excerpt of the input stays well under this.
SHORT = 400


def _laughs(levels: int) -> str:
    """A 'billion laughs' step: each level repeats the one before nine times (9**levels
    values from a few hundred bytes)."""
    body = '&a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]'
    previous = "a"
    for name in "bcdefghijk"[: levels - 1]:
        body = f"&{name} [{body}," + ",".join([f"*{previous}"] * 8) + "]"
        previous = name
    return f"steps:\n  - prune: {body}\n"


@pytest.mark.parametrize("levels", [7, 9])
def test_billion_laughs_is_refused_with_a_short_message(levels):
    text = _laughs(levels)
    assert len(text) < 400
    with pytest.raises(RecipeError, match="more than 10,000 YAML values") as err:
        Recipe.from_yaml(text)
    assert len(str(err.value)) < SHORT


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("steps: " + "[" * 5000 + "]" * 5000, "nested more than 32 levels"),
        ("steps: &a [*a]", "repeats a node that contains it"),
        ("steps:\n  - prune: {sparsity: " + "1" * 5000 + "}", "a value cannot be read"),
        ("steps: !" + "t" * 100_000 + " x", "not valid YAML"),
    ],
    ids=["deep", "self-alias", "long-number", "long-tag"],
)
def test_hostile_yaml_is_one_short_recipe_error(text, message):
    with pytest.raises(RecipeError, match=message) as err:
        Recipe.from_yaml(text)
    assert len(str(err.value)) < SHORT and "\n" not in str(err.value)


@pytest.mark.parametrize(
    "text",
    [
        "steps: " + "s" * 100_000,
        "steps:\n  - " + "v" * 1000 + ": {}",
        "steps:\n  - prune: {method: magnitude, pattern: " + "p" * 100_000 + "}",
        "steps:\n  - prune: {method: " + "m" * 100_000 + "}",
        "steps:\n  - prune: {method: magnitude, targets: " + "t" * 100_000 + "}",
        "steps:\n  - prune: {method: magnitude, sparsity: 0x" + "f" * 5000 + "}",
        "steps:\n  - finetune: " + str(list(range(2000))),
    ],
    ids=["steps", "verb", "pattern", "method", "targets", "huge-int", "body"],
)
def test_errors_quote_a_short_excerpt_of_the_input(text):
    with pytest.raises(RecipeError) as err:
        Recipe.from_yaml(text)
    assert len(str(err.value)) < SHORT
    assert "…" in str(err.value) or "..." in str(err.value) or "bits>" in str(err.value)


def test_a_recipe_file_over_the_size_limit_is_refused_before_it_is_read(tmp_path, monkeypatch):
    def no_parsing(*args, **kwargs):
        raise AssertionError("the oversized recipe was parsed")

    monkeypatch.setattr(recipe_module, "load_yaml", no_parsing)
    path = tmp_path / "big.yaml"
    path.write_text("steps:\n  - measure: {}\n" + "#" * (2 * MAX_BYTES) + "\n")
    with pytest.raises(RecipeError, match=r"is 2,097,\d+ bytes; recipes are at most 1,048,576"):
        Recipe.from_yaml(path)


def test_a_binary_recipe_file_is_one_clean_line(tmp_path):
    path = tmp_path / "model.yaml"
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(RecipeError, match=r"is not UTF-8 text \(byte 0x80 at offset 128\)"):
        Recipe.from_yaml(path)


def test_small_aliases_and_merge_keys_still_work():
    recipe = Recipe.from_yaml(
        "steps:\n"
        "  - prune: &p {method: magnitude, sparsity: 0.5}\n"
        "  - finetune: &ft {epochs: 1, lr: 0.0001}\n"
        "  - prune: {<<: *p, sparsity: 0.6}\n"
        "  - finetune: *ft\n"
    )
    assert recipe.steps[2].to_dict()["prune"]["sparsity"] == 0.6
    assert recipe.steps[3].to_dict() == recipe.steps[1].to_dict()


def test_an_override_with_a_huge_step_number_is_a_recipe_error():
    recipe = Recipe.from_yaml("steps:\n  - finetune: {epochs: 1}")
    with pytest.raises(RecipeError, match=r"the recipe has steps 1\.\.1") as err:
        recipe.with_overrides({"9" * 5000 + ".epochs": 2})
    assert len(str(err.value)) < SHORT
