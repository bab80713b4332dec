"""The generated parts of the docs: the methods table (from ``prunekit.methods()``) and the
command-line reference (from the ``prunekit`` command's own parsers).

A page marks where a part goes with a pair of comments::

    <!-- generated:methods -->
    <!-- /generated:methods -->

The docs site fills its pages at build time (``scripts/mkdocs_hooks.py``), so they cannot go
stale. README.md keeps its methods table in the file, and ``tests/test_docs.py`` fails when it
differs from what this script generates; to update it::

    python scripts/gendocs.py            # rewrite the generated blocks of README.md
    python scripts/gendocs.py --check    # exit 1, naming the block, if one is stale
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CHECKED = (ROOT / "README.md",)

BLOCK = re.compile(
    r"(?P<open><!-- generated:(?P<name>[a-z-]+) -->\n)(?P<body>.*?)"
    r"(?P<close><!-- /generated:(?P=name) -->)",
    re.S,
)


def _cell(text: Any) -> str:
    # A '|' inside a cell (|w|) would end it; newlines would end the row.
    return " ".join(str(text).split()).replace("|", "\\|")


def methods_table() -> str:
    """One row per registered method, from the registry alone."""
    from prunekit.registry import methods_markdown

    return methods_markdown()


def _click_command() -> Any:
    import typer

    from prunekit.cli import app

    return typer.main.get_command(app)


def subcommands() -> dict[str, set[str]]:
    """Every subcommand of ``prunekit`` and the options it accepts (``--out``, ``--no-latency``)."""
    root = _click_command()
    found = {}
    for name, command in root.commands.items():
        opts: set[str] = set()
        for param in command.params:
            opts.update(getattr(param, "opts", ()))
            opts.update(getattr(param, "secondary_opts", ()))
        found[name] = {o for o in opts if o.startswith("-")}
    return found


def cli_reference() -> str:
    """One section per subcommand: what it does, its usage line and a table of its options."""
    root = _click_command()
    context_type = type(root.make_context("prunekit", [], resilient_parsing=True))
    parent = context_type(root, info_name="prunekit")
    out = []
    for name, command in root.commands.items():
        ctx = context_type(command, info_name=name, parent=parent)
        help_text = (command.help or "").strip()
        out += [f"## prunekit {name}", "", help_text, "", "```text"]
        out += [command.get_usage(ctx).strip(), "```", ""]
        rows = []
        for param in command.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None or "--help" in getattr(param, "opts", ()):
                continue
            names, text = record
            kind = "argument" if param.param_type_name == "argument" else ""
            rows.append(f"| `{_cell(names)}` | {_cell(text) or kind} |")
        if rows:
            out += ["| option | meaning |", "|---|---|", *rows, ""]
    return "\n".join(out)


GENERATORS: dict[str, Callable[[], str]] = {"methods": methods_table, "cli": cli_reference}


def fill(text: str) -> str:
    """``text`` with every generated block replaced by what its generator writes now."""

    def replace(match: re.Match[str]) -> str:
        name = match["name"]
        if name not in GENERATORS:
            raise ValueError(f"generated block {name!r}: no generator; known: {sorted(GENERATORS)}")
        body = GENERATORS[name]().rstrip("\n") + "\n"
        return match["open"] + body + match["close"]

    return BLOCK.sub(replace, text)


def stale(paths: tuple[Path, ...] = CHECKED) -> list[str]:
    """The ``path: block`` of every generated block that differs from its generator's output."""
    found = []
    for path in paths:
        text = path.read_text()
        filled = fill(text)
        if filled != text:
            old = {m["name"]: m["body"] for m in BLOCK.finditer(text)}
            new = {m["name"]: m["body"] for m in BLOCK.finditer(filled)}
            found += [f"{path.name}: {n}" for n in old if old[n] != new[n]]
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report stale blocks")
    args = parser.parse_args(argv)
    if args.check:
        bad = stale()
        for item in bad:
            print(f"stale generated block {item}; run python scripts/gendocs.py", file=sys.stderr)
        return 1 if bad else 0
    for path in CHECKED:
        text = path.read_text()
        filled = fill(text)
        if filled != text:
            path.write_text(filled)
            print(f"updated {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
