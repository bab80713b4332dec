"""text:FILE data: the fixed line split, stream windows, padded lines, errors that name the fix."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformers

from prunekit.data import TextSplits, load_data, write_gloss_text
from prunekit.data.text import split_lines, token_stream
from prunekit.data.wordnet import HELD_OUT, noun_synsets, parse_synset, split_synsets
from prunekit.errors import DataNotFoundError, PrunekitError

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"abcdefghijklmnopqrstuvwxyz"]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> transformers.PreTrainedTokenizerBase:
    vocab = tmp_path_factory.mktemp("tok") / "vocab.txt"
    vocab.write_text("\n".join(VOCAB) + "\n")
    # Single letters as words: every letter is exactly one token, so counts are predictable.
    return transformers.BertTokenizerFast(vocab_file=str(vocab))


@pytest.fixture
def text_file(tmp_path: Path) -> Path:
    # Unique lines of 3 to 7 one-letter words; the first two letters spell the line's index.
    lines = [
        " ".join([chr(97 + i % 26), chr(97 + i // 26)] + ["x"] * (i % 5 + 1)) for i in range(40)
    ]
    file = tmp_path / "corpus.txt"
    file.write_text("\n".join(lines[:20]) + "\n\n   \n" + "\n".join(lines[20:]) + "\n")
    return file


def test_split_holds_out_the_last_tenth_of_non_empty_lines(text_file: Path) -> None:
    train, test = split_lines(text_file.read_text().splitlines())
    lines = [line for line in text_file.read_text().splitlines() if line.strip()]
    assert len(lines) == 40 and (train, test) == (lines[:36], lines[36:])
    assert split_lines(["a", "b"]) == (["a"], ["b"])


def test_stream_windows_have_exactly_seq_len_tokens(text_file: Path, tokenizer) -> None:
    data = load_data(f"text:{text_file}", tokenizer=tokenizer, seq_len=16)
    assert isinstance(data, TextSplits) and data.mode == "stream"
    stream = token_stream(tokenizer, data.lines["train"])
    assert len(data.train) == len(stream) // 16 and len(data.test) >= 1
    batch = next(iter(data.loader("train", batch_size=4, shuffle=False)))
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    assert batch["input_ids"].shape == (4, 16) and torch.equal(batch["labels"], batch["input_ids"])
    assert torch.equal(batch["input_ids"].flatten(), stream[:64])
    assert int((stream == tokenizer.sep_token_id).sum()) == len(data.lines["train"]) - 1


def test_split_is_deterministic_and_disjoint(text_file: Path, tokenizer) -> None:
    a = load_data(f"text:{text_file}", tokenizer=tokenizer, seq_len=8)
    b = load_data(f"text:{text_file}", tokenizer=tokenizer, seq_len=8)
    assert a.lines == b.lines
    assert not set(a.lines["train"]) & set(a.lines["test"])
    for split in ("train", "test"):
        first = [x["input_ids"] for x in a.loader(split, batch_size=3, seed=5)]
        again = [x["input_ids"] for x in b.loader(split, batch_size=3, seed=5)]
        assert all(torch.equal(x, y) for x, y in zip(first, again, strict=True))
    assert sum(len(x["input_ids"]) for x in a.loader("train", num_samples=5)) == 5


def test_lines_mode_pads_each_line_to_seq_len(text_file: Path, tokenizer) -> None:
    data = load_data(f"text:{text_file}", tokenizer=tokenizer, seq_len=6, mode="lines")
    assert len(data.train) == 36 and len(data.test) == 4
    batch = next(iter(data.loader("test", batch_size=4)))
    assert {"input_ids", "attention_mask", "token_type_ids"} <= set(batch)
    assert batch["input_ids"].shape == (4, 6)
    lengths = [min(len(line.split()) + 2, 6) for line in data.lines["test"]]
    assert batch["attention_mask"].sum(1).tolist() == lengths
    assert int(batch["input_ids"][0, 0]) == tokenizer.cls_token_id


def test_text_errors_name_the_fix(tmp_path: Path, text_file: Path, tokenizer) -> None:
    with pytest.raises(PrunekitError, match="needs the model's tokenizer"):
        load_data(f"text:{text_file}")
    with pytest.raises(PrunekitError, match="is not a file"):
        load_data(f"text:{tmp_path / 'missing.txt'}", tokenizer=tokenizer)
    with pytest.raises(
        PrunekitError,
        match=r"calibration text has \d+ tokens, fewer than one window of seq_len=4096 — give "
        r"more text or lower seq_len",
    ):
        load_data(f"text:{text_file}", tokenizer=tokenizer, seq_len=4096)
    with pytest.raises(PrunekitError, match="mode must be one of stream, lines"):
        load_data(f"text:{text_file}", tokenizer=tokenizer, mode="chunks")
    with pytest.raises(PrunekitError, match="at least 2"):
        (tmp_path / "one.txt").write_text("just one line\n\n")
        load_data(f"text:{tmp_path / 'one.txt'}", tokenizer=tokenizer)
    with pytest.raises(PrunekitError, match="takes no options; got tokenizer"):
        load_data("digits", tokenizer=tokenizer)
    with pytest.raises(PrunekitError, match="is not recognised"):
        load_data("text")


def test_wordnet_line_parsing() -> None:
    line = (
        "00217593 04 n 02 kill 1 air_raid(p) 0 002 @ 00217014 n 0000 + 00355365 v 0101 | the "
        'destruction of an enemy plane; "the pilot reported two kills"  \n'
    )
    synset = parse_synset(line)
    assert synset is not None and synset.words == ("kill", "air raid")
    assert synset.definition == "the destruction of an enemy plane"
    assert synset.gloss.endswith('"the pilot reported two kills"')
    assert parse_synset("  1 This software and database is being provided\n") is None


def test_gloss_text_is_fixed_and_disjoint_from_the_held_out_synsets(tmp_path: Path) -> None:
    file = write_gloss_text(tmp_path / "glosses.txt", num_lines=50)
    again = write_gloss_text(tmp_path / "again.txt", num_lines=50)
    lines = file.read_text().splitlines()
    assert len(lines) == 50 and lines == again.read_text().splitlines()
    held_out, rest = split_synsets()
    assert len(held_out) == HELD_OUT and len(held_out) + len(rest) == len(noun_synsets())
    assert lines == [f"{', '.join(s.words)}: {s.gloss}" for s in rest[:50]]
    assert not {s.offset for s in held_out} & {s.offset for s in rest}
    # More text after a file written before: the order's next lines, none of the earlier ones
    more = write_gloss_text(tmp_path / "more.txt", num_lines=20, start=40).read_text().splitlines()
    assert more[:10] == lines[40:] and not set(more[10:]) & set(lines)
    with pytest.raises(PrunekitError, match="start \\+ num_lines must be <="):
        write_gloss_text(tmp_path / "x.txt", num_lines=10, start=len(rest) - 5)


def test_missing_wordnet_names_the_package(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match="apt-get install wordnet-base"):
        noun_synsets(tmp_path)
