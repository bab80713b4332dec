"""with_more_text: a text file's every line added to training batches, tokenized as the data is,
shuffled under a seed; errors that say what to change."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformers

from prunekit.data import load_data, with_more_text
from prunekit.errors import PrunekitError

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"abcdefghijklmnopqrstuvwxyz"]


@pytest.fixture(scope="module")
def tokenizer() -> transformers.PreTrainedTokenizerBase:
    # Every letter is one token of its own (transformers 5 reads a vocab= mapping, and no longer
    # a vocab_file= given alone), so the lines of each file can be told apart once tokenized.
    return transformers.BertTokenizerFast(vocab={w: i for i, w in enumerate(VOCAB)})


def _lines(n: int, first: str) -> str:
    # Distinct lines: the first letter marks the file, the next two the line's index.
    return "".join(f"{first} {chr(97 + i % 26)} {chr(97 + i // 26)} x y\n" for i in range(n))


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    file = tmp_path / "data.txt"
    file.write_text(_lines(40, "a"))
    return file


@pytest.fixture
def more_file(tmp_path: Path) -> Path:
    file = tmp_path / "more.txt"
    file.write_text(_lines(30, "m") + "\n   \n")  # blank lines are not samples
    return file


def _ids(batches: list) -> list[list[int]]:
    return [row.tolist() for b in batches for row in b["input_ids"]]


def test_every_line_is_added_as_the_data_is_tokenized(data_file, more_file, tokenizer) -> None:
    splits = load_data(f"text:{data_file}", tokenizer=tokenizer, seq_len=8, mode="lines")
    loader = splits.loader("train", batch_size=4, seed=0)
    batches, added = with_more_text(loader, splits, more_file, seed=0)
    assert added == 30  # both splits of the file train: nothing of it is held out
    assert len(batches) == len(loader) + 8  # 27 + 3 lines of more text in batches of 4
    rows = _ids(batches)
    assert len(rows) == len(splits.train) + 30
    assert all(b["input_ids"].shape[1] == 8 and set(b) == {"input_ids", "token_type_ids",
               "attention_mask"} for b in batches)  # fmt: skip
    m = tokenizer.convert_tokens_to_ids("m")
    more_rows = sorted(r for r in rows if r[1] == m)  # [CLS] m …
    expected = tokenizer(_lines(30, "m").splitlines(), padding="max_length", max_length=8,
                         truncation=True)["input_ids"]  # fmt: skip
    assert more_rows == sorted(expected)
    # the two sources are shuffled together, not appended
    marks = [b["input_ids"][0, 1].item() == m for b in batches]
    assert marks != sorted(marks) and marks != sorted(marks, reverse=True)


def test_stream_mode_adds_windows(data_file, more_file, tokenizer) -> None:
    splits = load_data(f"text:{data_file}", tokenizer=tokenizer, seq_len=16)
    more = load_data(f"text:{more_file}", tokenizer=tokenizer, seq_len=16)
    batches, added = with_more_text(splits.loader("train", batch_size=2), splits, more_file)
    assert added == len(more.train) + len(more.test) > 0
    assert sum(len(b["input_ids"]) for b in batches) == len(splits.train) + added
    assert all(torch.equal(b["labels"], b["input_ids"]) for b in batches)


def test_the_order_depends_only_on_the_seed(data_file, more_file, tokenizer) -> None:
    splits = load_data(f"text:{data_file}", tokenizer=tokenizer, seq_len=8, mode="lines")

    def order(seed: int) -> list[list[int]]:
        loader = splits.loader("train", batch_size=4, seed=seed)
        return _ids(with_more_text(loader, splits, more_file, seed=seed)[0])

    assert order(0) == order(0)
    assert order(1) != order(0) and sorted(order(1)) == sorted(order(0))
    # a list of batches works given their batch size
    listed = list(splits.loader("train", batch_size=4, seed=0))
    batches, _ = with_more_text(listed, splits, more_file, batch_size=4, seed=0)
    assert _ids(batches) == order(0)


def test_bad_input_says_what_to_change(data_file, tmp_path, tokenizer) -> None:
    splits = load_data(f"text:{data_file}", tokenizer=tokenizer, seq_len=8, mode="lines")
    loader = splits.loader("train", batch_size=4)
    with pytest.raises(PrunekitError, match="is not a file; pass a text file"):
        with_more_text(loader, splits, tmp_path / "missing.txt")
    with pytest.raises(PrunekitError, match="is not a file"):
        with_more_text(loader, splits, tmp_path)
    blank = tmp_path / "blank.txt"
    blank.write_text("\n  \n")
    with pytest.raises(PrunekitError, match=r"has 0 non-empty line.*at least 2"):
        with_more_text(loader, splits, blank)
    digits = load_data("digits")
    with pytest.raises(PrunekitError, match="'digits' is not text data"):
        with_more_text(digits.loader("train"), digits, data_file)
    with pytest.raises(PrunekitError, match="batch_size must be"):
        with_more_text(list(loader), splits, data_file)
