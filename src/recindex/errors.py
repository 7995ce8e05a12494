"""Errors a user can cause and fix. The CLI prints them without a traceback."""

from __future__ import annotations

from pathlib import Path


class RecIndexError(Exception):
    """A problem with the user's input, files or settings, stated so that it can be fixed."""


class DataFormatError(RecIndexError):
    """A data file does not have the expected form. Names the file, the line and what was expected."""

    def __init__(self, path: str | Path, line: int | None, expected: str, found: str | None = None):
        where = f"{path}" if line is None else f"{path}, line {line}"
        message = f"{where}: expected {expected}"
        if found is not None:
            found = found.strip()
            shown = found if len(found) <= 80 else found[:77] + "..."
            message += f", found {shown!r}"
        super().__init__(message)
        self.path = str(path)
        self.line = line


class BundleError(RecIndexError):
    """A bundle is missing, corrupt, or does not match what it is used with."""


class InvalidRequest(RecIndexError):
    """A query, an item update or a filter is malformed (wrong dimension, NaN, unknown attribute, ...)."""
