"""``prunekit methods``: what is registered, one line each."""

from __future__ import annotations

import typer

from prunekit.cli.common import print_json, show
from prunekit.measure.render import render_table
from prunekit.registry import DATA_NEEDS, methods_markdown
from prunekit.registry import methods as registered


def methods(
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
    markdown: bool = typer.Option(False, "--markdown", help="The table as Markdown (docs)."),
) -> None:
    """List the registered methods: kind, config, patterns, what each reads."""
    infos = registered()
    if markdown:
        show(methods_markdown().rstrip("\n"))
        return
    if json_out:
        print_json(
            [
                {
                    "name": m.name,
                    "kind": m.kind,
                    "config": m.config.__name__,
                    "needs_data": m.needs_data,
                    "reads": m.data,
                    "patterns": list(m.patterns),
                    "summary": m.summary,
                    "fields": m.config().to_dict(),
                    "example": m.example,
                }
                for m in infos
            ]
        )
        return
    rows = [
        [m.name, m.kind, m.config.__name__, ", ".join(m.patterns) or "-", m.data, m.summary]
        for m in infos
    ]
    header = ["name", "kind", "config", "patterns", "reads", "what"]
    show(render_table("Registered methods", header, rows))
    show("reads: " + "; ".join(f"{k} = {v}" for k, v in DATA_NEEDS.items()))


def register(app: typer.Typer) -> None:
    app.command("methods")(methods)
