"""An offline English text corpus for the language-model builtins: Debian's ``fortunes``.

Why ``fortunes`` (the BSD fortune-mod quotation files; ``apt-get install fortunes``):

- size: ~2.5 MB of text in 48 topic files; 15,026 quotations after cleaning (~0.76M tokens
  with gpt-tiny's 4096-token BPE): enough to train a few-million-parameter causal LM in
  minutes on a CPU, small enough to keep in memory;
- cleanliness: plain modern English prose, jokes, quotations and short verse, separated by
  ``%`` lines; the only markup is terminal overstriking (``_\\bX``), undone below. Webster 1913
  (``dict-gcide``) is archaic and needs heavy markup cleanup; the Jargon File (``dict-jargon``)
  is one small, slang-heavy glossary;
- licence: distributed by Debian main under the BSD fortune-mod copyright
  (``/usr/share/doc/fortunes/copyright``); the offensive set (``fortunes-off``) is not used.

Cleaning: every quotation becomes one line (overstrikes undone, whitespace runs collapsed to one
space); pictures (``ascii-art``), lines dominated by non-letters and tokens longer than
``MAX_WORD`` characters (URLs, patch names) are dropped, and duplicates across files are kept
once. Splitting is by a seeded hash of each cleaned line, so it is deterministic, disjoint, and
stable when files are added: ~90% train, 5% calibration, 5% held-out evaluation (13,467 /
740 / 819 lines; 2.2 MB / 118 kB / 143 kB of text).
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import tempfile
import unicodedata
from pathlib import Path

from prunekit.errors import DataNotFoundError, PrunekitError

PACKAGE = "fortunes"
DEFAULT_DIR = Path("/usr/share/games/fortunes")
# Files of pictures rather than sentences.
EXCLUDED_FILES = frozenset({"ascii-art"})
SPLITS = ("train", "calib", "eval")
# Out of 100 hash buckets: [0, 5) eval, [5, 10) calib, the rest train.
_EVAL_BUCKETS, _CALIB_BUCKETS = 5, 5
MIN_CHARS = 8
MAX_WORD = 40
MIN_LETTER_FRACTION = 0.6
SEED = 0

_WHITESPACE = re.compile(r"\s+")
_LONG_WORD = re.compile(rf"\S{{{MAX_WORD + 1},}}")
_LETTERS = re.compile(r"[^\W\d_]")  # what str.isalpha() accepts


def corpus_dir(path: str | Path | None = None) -> Path:
    """The folder of fortune files: ``path``, else Debian's; DataNotFoundError when missing."""
    folder = Path(path) if path is not None else DEFAULT_DIR
    if not _fortune_files(folder):
        raise DataNotFoundError(
            f"corpus: no fortune files in {folder}; install Debian's {PACKAGE} package "
            f"(apt-get install {PACKAGE}) or pass the folder of fortune files"
        )
    return folder


def clean_fortune(text: str) -> str:
    """One quotation as one line: overstrikes undone, NFC, whitespace runs → one space.

    Returns ``""`` for text that is not worth training on (too short, a picture, a URL).
    """
    line = _WHITESPACE.sub(" ", unicodedata.normalize("NFC", _undo_overstrike(text))).strip()
    if len(line) < MIN_CHARS or _LONG_WORD.search(line):
        return ""
    visible = len(line) - line.count(" ")
    return line if len(_LETTERS.findall(line)) >= MIN_LETTER_FRACTION * visible else ""


def corpus_lines(path: str | Path | None = None) -> list[str]:
    """Every cleaned, de-duplicated quotation of the corpus, by file name then position."""
    seen: set[str] = set()
    lines = []
    for file in _fortune_files(corpus_dir(path)):
        for entry in _read_entries(file):
            line = clean_fortune(entry)
            if line and line not in seen:
                seen.add(line)
                lines.append(line)
    return lines


def split_of(line: str, seed: int = SEED) -> str:
    """``"train"``, ``"calib"`` or ``"eval"`` for one cleaned line, by a seeded hash of it."""
    digest = hashlib.blake2b(f"{seed}\n{line}".encode(), digest_size=8).digest()
    bucket = int.from_bytes(digest, "big") % 100
    if bucket < _EVAL_BUCKETS:
        return "eval"
    return "calib" if bucket < _EVAL_BUCKETS + _CALIB_BUCKETS else "train"


def corpus_splits(path: str | Path | None = None, seed: int = SEED) -> dict[str, list[str]]:
    """The cleaned corpus split into ``train`` / ``calib`` / ``eval`` lists of lines (disjoint)."""
    return {name: list(lines) for name, lines in _splits(corpus_dir(path).resolve(), seed).items()}


@functools.lru_cache(maxsize=4)
def _splits(folder: Path, seed: int) -> dict[str, tuple[str, ...]]:
    # Cleaning takes a second or two; loading gpt-tiny asks for the split files more than once.
    splits: dict[str, list[str]] = {name: [] for name in SPLITS}
    for line in corpus_lines(folder):
        splits[split_of(line, seed)].append(line)
    return {name: tuple(lines) for name, lines in splits.items()}


def corpus_files(
    out_dir: str | Path, path: str | Path | None = None, seed: int = SEED
) -> dict[str, Path]:
    """Write ``train.txt``, ``calib.txt`` and ``eval.txt`` (one sample per line) into ``out_dir``.

    Returns ``{"train": Path, "calib": Path, "eval": Path}``, usable as ``text:FILE`` data specs.
    Files that already hold the right text are left alone; others are replaced atomically.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, lines in corpus_splits(path, seed).items():
        file = out / f"{name}.txt"
        text = "\n".join(lines) + "\n"
        if not (file.is_file() and file.read_text(encoding="utf-8") == text):
            _atomic_write_text(file, text)
        files[name] = file
    return files


def _fortune_files(folder: Path) -> list[Path]:
    # Each topic is a plain file beside its ``.dat`` index; ``.u8`` entries are symlinks to it.
    if not folder.is_dir():
        return []
    return sorted(
        file
        for file in folder.iterdir()
        if file.is_file()
        and not file.is_symlink()
        and file.suffix not in (".dat", ".u8")
        and file.name not in EXCLUDED_FILES
    )


def _read_entries(file: Path) -> list[str]:
    try:
        text = file.read_text(encoding="utf-8", errors="replace")
    except OSError as err:
        raise PrunekitError(f"corpus: cannot read {file}: {err}") from err
    return re.split(r"^%\s*$", text, flags=re.MULTILINE)


def _undo_overstrike(text: str) -> str:
    # Terminal bold/underline: "_\bX" prints X over _, so each backspace erases one character.
    if "\b" not in text:
        return text
    out: list[str] = []
    for ch in text:
        if ch == "\b":
            if out:
                out.pop()
        else:
            out.append(ch)
    return "".join(out)


def _atomic_write_text(path: Path, text: str) -> None:
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        tmp.chmod(0o644)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
