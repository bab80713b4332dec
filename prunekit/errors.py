"""Errors a user can cause. Each message names the parameter, the value received and the fix."""

from __future__ import annotations

import reprlib
from typing import Any

QUOTE_LIMIT = 80


class PrunekitError(ValueError):
    """Bad input that the user can fix; the message says what to change.

    A subclass of ``ValueError`` so callers that already catch ``ValueError`` keep working.
    The CLI turns it into exit status 2 with the message on one line.
    """


class DataNotFoundError(PrunekitError):
    """A built-in dataset's files are missing; the message names the package to install."""


class _ShortRepr(reprlib.Repr):
    def __init__(self) -> None:
        super().__init__()
        self.maxlevel = 3
        self.maxstring = self.maxother = self.maxlong = QUOTE_LIMIT
        self.maxlist = self.maxtuple = self.maxdict = self.maxset = self.maxfrozenset = 8

    def repr_int(self, x: int, level: int) -> str:
        # Python refuses str() of integers over 4,300 digits, and YAML's 0x… reads any size.
        if x.bit_length() > 256:
            return f"<an integer of {x.bit_length()} bits>"
        return super().repr_int(x, level)


_SHORT = _ShortRepr()


def quote(value: Any, limit: int = QUOTE_LIMIT) -> str:
    """``repr(value)`` for an error message, at most ``limit`` characters (``…`` marks a cut).

    User input can be megabytes (or, through YAML aliases, billions of nodes); this reads only
    the first few items of each container, three levels deep, so its cost is bounded too.
    """
    text = _SHORT.repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
