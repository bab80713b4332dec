"""``prunekit glosses OUT``: write WordNet noun glosses, one per line, as unlabelled text.

The same glosses builtin:minilm calibrates and is evaluated on (its first 4,000), from synsets
outside the held-out retrieval set, in a fixed seeded order; ``--start 4000`` gives further
ones, disjoint from that file, e.g. for ``prunekit prune --recover distill --recover-text OUT``;
``--parts`` adds each synset's words alone and its definition alone as lines of their own.
"""

from __future__ import annotations

from pathlib import Path

import typer

from prunekit.cli.common import check_writable, console, print_json, require
from prunekit.data import write_gloss_text


def glosses(
    out: Path = typer.Argument(..., metavar="OUT", help="The text file written (replaced)."),
    lines: int = typer.Option(4000, help="How many glosses (lines) to write, ≥ 10."),
    start: int = typer.Option(
        0,
        help="Skip this many glosses of the order first: 4000 gives text disjoint from "
        "builtin:minilm's gloss file.",
    ),
    parts: bool = typer.Option(
        False,
        "--parts",
        help="Also write each synset's words and its definition as lines of their own (3 lines "
        "per gloss): the short inputs a definition→words retriever embeds.",
    ),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output on stdout."),
) -> None:
    """Write WordNet glosses (`words: gloss`), one per line: unlabelled text for text models.

    Reads Debian's wordnet-base (/usr/share/wordnet); the same file on every machine."""
    require(lines >= 10, "--lines", lines, "≥ 10")
    require(start >= 0, "--start", start, "≥ 0")
    require(not out.is_dir(), "OUT", str(out), "a file to write, not a folder")
    check_writable(out, "OUT")
    path = write_gloss_text(out, num_lines=lines, start=start, parts=parts)
    written = 3 * lines if parts else lines
    if json_out:
        print_json({"out": str(path), "lines": written, "glosses": lines, "start": start,
                    "parts": parts})  # fmt: skip
        return
    split = " (each also as its words and its definition alone)" if parts else ""
    console.print(f"wrote {lines:,} WordNet glosses (from {start:,}){split}: {written:,} lines "
                  f"to {path}", highlight=False, soft_wrap=True)  # fmt: skip


def register(app: typer.Typer) -> None:
    app.command("glosses")(glosses)
