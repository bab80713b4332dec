"""A distill step's ``more_text``: read from the recipe's folder, checked when the recipe is read,
and every line of it trains (tokenized as the run's text data is) on a tiny BERT."""

from pathlib import Path

import pytest
import transformers

from prunekit.data import load_data
from prunekit.recipe import Evaluation, Recipe, RecipeError, run_recipe
from tests import hf_zoo
from tests.models.test_hf import VOCAB

QUICK = Evaluation(accuracy=False, batch_sizes=(1,), min_run_time=0.05, step_latency=False)
DISTILL = "{method: kd, epochs: 1, alpha: 1.0, output_loss: cosine, lr: 0.001"
WORDS = [w for w in VOCAB if w.isalpha()]


def _text(path: Path, lines: int, offset: int) -> Path:
    path.write_text("".join(
        " ".join(WORDS[(i * 7 + j + offset) % len(WORDS)] for j in range(8)) + "\n"
        for i in range(lines)
    ))  # fmt: skip
    return path


def _recipe_file(folder: Path, fields: str) -> Path:
    recipe = folder / "recipe.yaml"
    recipe.write_text(f"steps:\n  - distill: {DISTILL}{fields}}}\n")
    return recipe


def test_more_text_is_read_from_the_recipes_folder_and_checked_on_load(tmp_path, monkeypatch):
    folder = tmp_path / "recipes"
    folder.mkdir()
    more = _text(folder / "more.txt", 20, 3)
    monkeypatch.chdir(tmp_path)  # not the recipe's folder
    step = Recipe.from_yaml(_recipe_file(folder, ", more_text: more.txt")).steps[0]
    assert step.options.more_text == str(more.resolve())
    assert step.fields()["more_text"] == str(more.resolve())  # recorded as the file read
    # in YAML text (no file), relative to the working directory
    text = f"steps:\n  - distill: {DISTILL}, more_text: recipes/more.txt}}\n"
    assert Recipe.from_yaml(text).steps[0].options.more_text == str(more.resolve())
    missing = r"step 1 \(distill\): field 'more_text': 'nope.txt' is not a file .*/recipes\)"
    with pytest.raises(RecipeError, match=missing + "; give an existing text file") as info:
        Recipe.from_yaml(_recipe_file(folder, ", more_text: nope.txt"))
    assert (info.value.step, info.value.field) == (1, "more_text")
    assert Recipe.from_yaml(_recipe_file(folder, "")).steps[0].options.more_text is None


@pytest.fixture
def bert_text(tmp_path):
    tokenizer = transformers.BertTokenizerFast(vocab={w: i for i, w in enumerate(VOCAB)})
    splits = load_data(f"text:{_text(tmp_path / 'data.txt', 40, 0)}", tokenizer=tokenizer,
                       seq_len=12, mode="lines")  # fmt: skip
    return splits, _text(tmp_path / "more.txt", 30, 5)


def _distill(tmp_path, name, splits, recipe):
    return run_recipe(
        recipe, hf_zoo.bert(len(VOCAB)), splits.loader("train", batch_size=4, seed=0),
        splits.loader("test", batch_size=8), out=tmp_path / name, evaluation=QUICK,
        splits=splits, progress=False,
    ).steps[0]["report"]  # fmt: skip


def test_a_distill_step_trains_on_every_line_of_more_text(tmp_path, bert_text):
    splits, more = bert_text
    plain = _distill(tmp_path, "plain", splits, Recipe.from_yaml(_recipe_file(tmp_path, "")))
    recipe = Recipe.from_yaml(_recipe_file(tmp_path, f", more_text: {more}"))
    extra = _distill(tmp_path, "more", splits, recipe)
    assert plain["steps"] == 9 and "more_text_samples" not in plain  # 36 training lines, by 4
    # and all 30 lines of the file: its 27 + 3 (both splits) in batches of 4
    assert extra["more_text_samples"] == 30 and extra["steps"] == 9 + 7 + 1


def test_more_text_without_text_data_is_refused_before_anything_runs(tmp_path, bert_text):
    splits, more = bert_text
    recipe = Recipe.from_yaml(_recipe_file(tmp_path, f", more_text: {more}"))
    train = splits.loader("train", batch_size=4)
    with pytest.raises(RecipeError, match="field 'more_text' is tokenized as the data is; pass"):
        run_recipe(recipe, hf_zoo.bert(len(VOCAB)), train, out=tmp_path / "a", evaluation=QUICK)
    with pytest.raises(RecipeError, match="pass train_data as a DataLoader"):
        run_recipe(recipe, hf_zoo.bert(len(VOCAB)), list(train), out=tmp_path / "b",
                   evaluation=QUICK, splits=splits)  # fmt: skip
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
