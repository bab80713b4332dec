"""The ``prunekit`` command: one module per subcommand, no logic the Python API lacks.

Exit status: 0 success, 1 failure, 2 bad usage or bad input (one line saying what to fix).
"""

from __future__ import annotations

import logging
import sys

import typer
from pydantic import ValidationError

from prunekit.cli import (
    analyze,
    auto,
    demo,
    export,
    factorize,
    glosses,
    measure,
    methods,
    prune,
    run,
)
from prunekit.errors import PrunekitError, quote

app = typer.Typer(
    name="prunekit",
    help="Make trained PyTorch models smaller and faster, with honest before/after figures.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
for module in (demo, prune, factorize, measure, export, methods, analyze, run, auto, glosses):
    module.register(app)

INTERRUPTED = 130  # Ctrl-C, as shells report it


def one_line(err: Exception) -> str:
    """A user error as one line: pydantic's field errors become 'field: message'."""
    if isinstance(err, ValidationError):
        first = err.errors()[0]
        # A location can hold user input (the key of a dict field): quoted short.
        where = ".".join(str(x) if len(str(x)) <= 40 else quote(x, 40) for x in first["loc"])
        msg = str(first["msg"]).removeprefix("Value error, ")
        more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
        return f"{err.title}: {where + ': ' if where else ''}{msg}{more}"
    return " ".join(str(err).split())


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``prunekit`` console script."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # Bars and spinners draw nothing into a file; there the library's progress lines (one per
    # epoch, block or trial, at INFO) show that a long step is alive.
    library = logging.getLogger("prunekit")
    level = library.level
    if not sys.stderr.isatty():
        library.setLevel(logging.INFO)
    try:
        # Commands return None; typer returns an exit code instead (130 for Ctrl-C).
        code = app(args=argv, standalone_mode=False)
    except typer.Exit as e:
        return e.exit_code
    except typer.Abort:
        print("aborted", file=sys.stderr)
        return 1
    except typer.TyperException as e:
        # Usage errors (unknown or missing options) from typer's parser: exit code 2.
        e.show()
        return int(getattr(e, "exit_code", 2))
    except (PrunekitError, ValidationError, TypeError) as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    except Exception as e:
        print(f"error: {type(e).__name__}: {one_line(e)}", file=sys.stderr)
        return 1
    finally:
        library.setLevel(level)
    if code == INTERRUPTED:
        print("aborted", file=sys.stderr)
    return code if isinstance(code, int) else 0


def entry() -> None:
    sys.exit(main())
