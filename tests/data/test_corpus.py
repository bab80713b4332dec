"""The fortunes corpus: cleaned one quotation per line, split deterministically and disjointly."""

from __future__ import annotations

from pathlib import Path

import pytest

from prunekit.data.corpus import (
    SPLITS,
    clean_fortune,
    corpus_dir,
    corpus_files,
    corpus_lines,
    corpus_splits,
    split_of,
)
from prunekit.errors import DataNotFoundError


@pytest.fixture(scope="module")
def lines() -> list[str]:
    return corpus_lines()


def split(lines: list[str], seed: int = 0) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {name: [] for name in SPLITS}
    for line in lines:
        out[split_of(line, seed)].append(line)
    return out


def test_one_clean_sample_per_line(lines: list[str]) -> None:
    assert len(lines) == len(set(lines)) > 14_000
    for line in lines:
        assert line and line == line.strip()
        assert "\n" not in line and "\b" not in line and "  " not in line


def test_splits_are_disjoint_sized_and_deterministic(lines: list[str]) -> None:
    splits = split(lines)
    assert splits == split(list(lines))
    train, calib, held_out = (set(splits[name]) for name in SPLITS)
    assert not (train & calib) and not (train & held_out) and not (calib & held_out)
    assert len(train) + len(calib) + len(held_out) == len(lines)
    # ~90 / 5 / 5 %
    assert len(train) > 0.85 * len(lines)
    assert 0.035 * len(lines) < len(calib) < 0.065 * len(lines)
    assert 0.035 * len(lines) < len(held_out) < 0.065 * len(lines)


def test_the_seed_changes_the_split(lines: list[str]) -> None:
    assert split(lines[:2000], seed=1) != split(lines[:2000], seed=0)


def test_overstrikes_undone_whitespace_collapsed_pictures_dropped() -> None:
    assert clean_fortune("_\bH_\bi there,\n\tfriend  -- me\n") == "Hi there, friend -- me"
    assert clean_fortune("  /\\_/\\\n ( o.o )\n  > ^ <   ||||  \n") == ""
    assert clean_fortune("ok") == ""
    assert clean_fortune("see http://" + "x" * 60 + " for more") == ""


def test_corpus_files_write_the_splits_once(tmp_path: Path) -> None:
    folder = tmp_path / "fortunes"
    folder.mkdir()
    (folder / "topic").write_text(
        "".join(f"Quotation number {i} is here.\n%\n" for i in range(200))
    )
    (folder / "topic.dat").write_bytes(b"\0\1binary index")
    files = corpus_files(tmp_path / "out", path=folder)
    assert sorted(files) == sorted(SPLITS)
    written = {name: file.read_text().splitlines() for name, file in files.items()}
    assert written == corpus_splits(folder)
    assert sum(map(len, written.values())) == 200
    stamps = {name: file.stat().st_mtime_ns for name, file in files.items()}
    corpus_files(tmp_path / "out", path=folder)
    assert stamps == {name: file.stat().st_mtime_ns for name, file in files.items()}


def test_missing_corpus_names_the_debian_package(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match="apt-get install fortunes"):
        corpus_dir(tmp_path / "nowhere")
