"""``prunekit methods``: what is registered, one line each."""

from __future__ import annotations

import typer

from prunekit.cli.common import print_json, show
from prunekit.measure.render import render_table
from prunekit.registry import methods as registered


def methods(
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """List the registered methods with one line each."""
    infos = registered()
    if json_out:
        print_json(
            [
                {
                    "name": m.name,
                    "kind": m.kind,
                    "config": m.config.__name__,
                    "needs_data": m.needs_data,
                    "summary": m.summary,
                    "fields": m.config().to_dict(),
                }
                for m in infos
            ]
        )
        return
    rows = [
        [m.name, m.kind, m.config.__name__, "yes" if m.needs_data else "no", m.summary]
        for m in infos
    ]
    show(
        render_table("Registered methods", ["name", "kind", "config", "needs data", "what"], rows),
    )


def register(app: typer.Typer) -> None:
    app.command("methods")(methods)
