"""Tables for people: rich renders them, this turns them into text the CLI can print."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.table import Table


def render_table(
    title: str, columns: Sequence[str], rows: Sequence[Sequence[str]], caption: str | None = None
) -> str:
    """A rich table rendered to plain text (no colour codes); numeric columns right-aligned."""
    table = Table(title=title, caption=caption, title_justify="left", caption_justify="left")
    for i, col in enumerate(columns):
        numeric = i > 0 and all(_numeric(row[i]) for row in rows if row[i])
        table.add_column(col, justify="right" if numeric else "left")
    for row in rows:
        table.add_row(*row)
    console = Console(width=120, record=True, color_system=None, file=_Null())
    console.print(table)
    return console.export_text().rstrip()


def _numeric(cell: str) -> bool:
    return cell[:1].isdigit() or cell[:1] in "+-–Δ." or cell == "n/a"


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """The same table as GitHub markdown."""
    head = "| " + " | ".join(columns) + " |"
    rule = "|" + "|".join("---" if i == 0 else "---:" for i in range(len(columns))) + "|"
    body = ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join([head, rule, *body])


class _Null:
    def write(self, _: str) -> int:
        return 0

    def flush(self) -> None:
        pass
