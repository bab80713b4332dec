"""The one shape every verb's report has, and the one place reports are formatted.

A report is a dataclass deriving from :class:`Report`. It has the four common fields
(``method``, ``config``, ``seconds``, ``skipped``) and its own; it declares what a person reads
as a ``title()``, a ``table()`` (columns and rows of cells) and, rarely, extra ``sections()``.
``to_dict`` (JSON-ready), ``str`` (a plain-text table) and ``to_markdown`` are generated from
those declarations and the dataclass fields, so a report never formats itself twice.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

Table = tuple[Sequence[str], list[Sequence[str]]]


@dataclass(kw_only=True)
class Report:
    """What a call did.

    method: the registered method's name, or the verb (``"finetune"``, ``"export-onnx"``).
    config: the call's config as its JSON dict, or None (an ``AutoReport`` holds the
        ``AutoConfig`` itself; ``to_dict`` writes its JSON dict).
    seconds: wall time of the call.
    skipped: layer or module name → why it was left as it was.

    ``to_dict()`` holds every field (less those in ``hidden``) and the properties named in
    ``computed``; nested dataclasses become dicts, tuples lists (see :func:`plain`).
    """

    method: str = ""
    config: dict[str, Any] | None = None
    seconds: float = 0.0
    skipped: dict[str, str] = field(default_factory=dict)

    computed: ClassVar[tuple[str, ...]] = ()  # properties to_dict adds after the fields
    hidden: ClassVar[tuple[str, ...]] = ()  # fields to_dict leaves out (models, not data)

    def title(self) -> str:
        """The report's one-line headline."""
        return f"{self.method} ({self.seconds:.1f} s)"

    def table(self) -> Table | None:
        """Columns and rows of cells (strings) for people; None: the title says it all."""
        return None

    def notes(self) -> list[str]:
        """Short lines under the table; by default what was skipped and why."""
        return [f"skipped {name}: {why}" for name, why in self.skipped.items()]

    def sections(self, markdown: bool) -> list[tuple[str, str]]:
        """Further ``(heading, body)`` parts after the table (e.g. a comparison)."""
        return []

    def to_dict(self) -> dict[str, Any]:
        out = {
            f.name: plain(getattr(self, f.name))
            for f in dataclasses.fields(self)
            if f.name not in self.hidden and f.name != "extra"
        }
        out.update({name: plain(getattr(self, name)) for name in self.computed})
        out.update(plain(getattr(self, "extra", {})))
        return out

    def __str__(self) -> str:
        from prunekit.measure.render import render_table

        table, notes = self.table(), self.notes()
        if table is None:
            text = "\n".join([self.title(), *notes])
        else:
            columns, rows = table
            text = render_table(self.title(), columns, rows, caption="\n".join(notes) or None)
        return "\n\n".join([text, *(body for _, body in self.sections(markdown=False))])

    def to_markdown(self, title: str | None = None) -> str:
        """The report as markdown: ``# title`` (default: the report's title), the table, the
        notes as a list, then the sections."""
        from prunekit.measure.render import markdown_table

        parts = [f"# {title or self.title()}"]
        if title is not None:
            parts.append(f"## {self.title()}")
        table = self.table()
        if table is not None:
            parts.append(markdown_table(table[0], [list(r) for r in table[1]]))
        if notes := self.notes():
            parts.append("\n".join(f"- {n}" for n in notes))
        parts += [f"## {heading}\n\n{body}" for heading, body in self.sections(markdown=True)]
        return "\n\n".join(parts) + "\n"


def plain(value: Any) -> Any:
    """``value`` as JSON data: to_dict() of objects that have one, dataclasses as dicts (with
    their ``computed`` properties), tuples as lists, paths as strings, dict keys as strings."""
    if hasattr(value, "to_dict") and not isinstance(value, type):
        return value.to_dict()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        out.update({name: plain(getattr(value, name)) for name in getattr(value, "computed", ())})
        return out
    if isinstance(value, dict):
        return {k if isinstance(k, str) else str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def shape(dims: Sequence[int]) -> str:
    """``(64, 3, 3, 3)`` → ``64×3×3×3``."""
    return "×".join(map(str, dims))
