"""Errors a user can cause. Each message names the parameter, the value received and the fix."""

from __future__ import annotations


class PrunekitError(ValueError):
    """Bad input that the user can fix; the message says what to change.

    A subclass of ``ValueError`` so callers that already catch ``ValueError`` keep working.
    The CLI turns it into exit status 2 with the message on one line.
    """


class DataNotFoundError(PrunekitError):
    """A built-in dataset's files are missing; the message names the package to install."""
