"""``prunekit glosses OUT``: WordNet glosses as unlabelled text, disjoint from builtin:minilm's
gloss file with --start 4000; bad input exits 2 with one line and writes nothing."""

import json

import pytest

from prunekit.cli import main
from prunekit.data import write_gloss_text
from prunekit.models.minilm import GLOSS_FILE


def test_glosses_continue_the_order_past_minilms_gloss_file(tmp_path, capsys):
    out = tmp_path / "more" / "glosses.txt"
    assert main(["glosses", str(out), "--lines", "60", "--start", "4000", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "out": str(out),
        "lines": 60,
        "glosses": 60,
        "start": 4000,
        "parts": False,
    }
    lines = out.read_text().splitlines()
    # builtin:minilm's file is the first 4,000 glosses of the same order
    minilm = write_gloss_text(tmp_path / GLOSS_FILE).read_text().splitlines()
    assert len(minilm) == 4000 and len(lines) == 60 and len(set(lines)) == 60
    assert not set(lines) & set(minilm)
    assert (
        lines
        == write_gloss_text(tmp_path / "all.txt", num_lines=4060).read_text().splitlines()[4000:]
    )


def test_parts_add_each_glosss_words_and_definition_as_lines(tmp_path, capsys):
    out = tmp_path / "parts.txt"
    assert main(["glosses", str(out), "--lines", "20", "--start", "4000", "--parts"]) == 0
    assert "60 lines" in capsys.readouterr().out
    lines = out.read_text().splitlines()
    whole = write_gloss_text(tmp_path / "whole.txt", num_lines=20, start=4000)
    assert lines[0::3] == whole.read_text().splitlines()
    for gloss, words, definition in zip(lines[0::3], lines[1::3], lines[2::3], strict=True):
        # "words: gloss", where the gloss starts with the definition (quoted examples follow)
        assert gloss.startswith(f"{words}: {definition}")
        assert ": " not in words and definition and words


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--lines", "5"], "--lines must be ≥ 10"),
        (["--start", "-1"], "--start must be ≥ 0"),
        (["--start", "100000"], "start + num_lines must be <="),
    ],
)
def test_bad_glosses_input_exits_2_with_one_line(tmp_path, capsys, args, message):
    out = tmp_path / "glosses.txt"
    assert main(["glosses", str(out), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_a_folder_is_no_output_file(tmp_path, capsys):
    assert main(["glosses", str(tmp_path)]) == 2
    assert "OUT must be a file to write, not a folder" in capsys.readouterr().err
