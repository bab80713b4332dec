"""Princeton WordNet 3.0 noun glosses, read from Debian's ``wordnet-base`` (``/usr/share/wordnet``).

Each noun synset gives a set of words (``mountain range, range, chain``), a definition (``a
series of hills or mountains``) and sometimes quoted examples. Two uses, kept disjoint:

- evaluation: ``HELD_OUT`` synsets (a seeded permutation's head) for the definition → words
  retrieval task in ``prunekit.measure.retrieval``;
- text: every other synset's gloss, one per line, for ``text:FILE`` calibration/evaluation data
  of encoders (``write_gloss_text``).

Why WordNet: 82k hand-written English definitions, a dictionary task dense sentence encoders
solve well above chance but far from perfectly, and a Debian package (WordNet licence, free).
"""

from __future__ import annotations

import functools
import os
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path

from prunekit.errors import DataNotFoundError, PrunekitError

PACKAGE = "wordnet-base"
DEFAULT_DIR = Path("/usr/share/wordnet")
NOUNS = "data.noun"
HELD_OUT = 5000  # synsets reserved for evaluation; text files never contain them
SEED = 0


@dataclass(frozen=True)
class Synset:
    """One WordNet synset: ``offset`` (its id in ``data.noun``), ``words`` (spaces, not
    underscores), ``definition`` (the gloss before its examples) and ``gloss`` (all of it)."""

    offset: str
    words: tuple[str, ...]
    definition: str
    gloss: str


def wordnet_dir(path: str | Path | None = None) -> Path:
    """The WordNet database folder: ``path``, else Debian's; DataNotFoundError when missing."""
    folder = Path(path).expanduser() if path is not None else DEFAULT_DIR
    if not (folder / NOUNS).is_file():
        raise DataNotFoundError(
            f"wordnet: {folder / NOUNS} not found; install Debian's {PACKAGE} package "
            f"(apt-get install {PACKAGE}) or pass the folder holding WordNet's {NOUNS}"
        )
    return folder


def parse_synset(line: str) -> Synset | None:
    """Parse one ``data.noun`` line (``offset lex_filenum ss_type w_cnt word lex_id … | gloss``);
    None for the licence header lines, which start with spaces."""
    if line.startswith(" ") or " | " not in line:
        return None
    head, _, gloss = line.partition(" | ")
    fields = head.split()
    try:
        count = int(fields[3], 16)
        words = tuple(fields[4 + 2 * i].split("(")[0].replace("_", " ") for i in range(count))
    except (IndexError, ValueError):
        raise PrunekitError(f"wordnet: malformed synset line {line[:60]!r}…") from None
    gloss = gloss.strip()
    definition = gloss.split('; "')[0].strip().rstrip(";").strip()
    return Synset(fields[0], words, definition, gloss)


@functools.lru_cache(maxsize=2)
def noun_synsets(path: str | Path | None = None) -> tuple[Synset, ...]:
    """Every noun synset (82,115 in WordNet 3.0), in file order."""
    folder = wordnet_dir(path)
    with open(folder / NOUNS, encoding="utf-8") as f:
        synsets = tuple(s for s in map(parse_synset, f) if s is not None and s.definition)
    if len(synsets) <= HELD_OUT:
        raise PrunekitError(
            f"wordnet: {folder / NOUNS} has {len(synsets)} synsets, expected WordNet 3.0's 82k; "
            f"reinstall {PACKAGE}"
        )
    return synsets


def split_synsets(
    path: str | Path | None = None, seed: int = SEED
) -> tuple[list[Synset], list[Synset]]:
    """``(held_out, rest)``: a seeded permutation of the noun synsets cut after ``HELD_OUT``."""
    synsets = list(noun_synsets(path))
    random.Random(seed).shuffle(synsets)
    return synsets[:HELD_OUT], synsets[HELD_OUT:]


def write_gloss_text(
    dest: str | Path,
    *,
    num_lines: int = 4000,
    seed: int = SEED,
    path: str | Path | None = None,
    start: int = 0,
    parts: bool = False,
) -> Path:
    """Write ``num_lines`` WordNet glosses (``words: gloss``), one per line, to ``dest``.

    They come from synsets outside the held-out evaluation set, in a seeded order, so the file is
    the same on every machine for the same arguments. Use it as ``text:DEST``: its last 10% of
    lines are the evaluation split. ``start``: skip that many glosses of the order first (more
    text disjoint from a file written before, e.g. builtin:minilm's first 4,000). ``parts``:
    each synset also gives its words alone and its definition alone as lines of their own (three
    lines per synset, ``num_lines`` counting synsets): the short inputs a definition → words
    retriever embeds, which whole glosses do not show a model. Written atomically; returns
    ``dest``.
    """
    if num_lines < 10:
        raise PrunekitError(f"num_lines must be >= 10; got {num_lines}")
    if start < 0:
        raise PrunekitError(f"start must be >= 0; got {start}")
    _, rest = split_synsets(path, seed)
    if start + num_lines > len(rest):
        raise PrunekitError(
            f"start + num_lines must be <= {len(rest)} (the glosses outside the held-out set); "
            f"got {start} + {num_lines}"
        )
    lines = []
    for s in rest[start : start + num_lines]:
        words = ", ".join(s.words)
        lines += [f"{words}: {s.gloss}", words, s.definition] if parts else [f"{words}: {s.gloss}"]
    dest = Path(dest).expanduser()
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide a shared cache from other users
        os.replace(tmp, dest)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return dest
