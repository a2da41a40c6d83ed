"""Errors a user can cause and fix. The CLI prints these as one line, without a traceback."""

from __future__ import annotations


class RekitError(Exception):
    """A problem with the user's input, configuration or environment."""


class ConfigError(RekitError, ValueError):
    """An invalid option value or combination of options."""


class DataError(RekitError, ValueError):
    """A problem in an input file. Names the file and, where known, the row."""

    def __init__(self, message: str, path: str | None = None, row: int | None = None):
        self.path, self.row, self.problem = path, row, message
        where = ""
        if path is not None:
            where = f"{path}"
            if row is not None:
                where += f", row {row}"
            where += ": "
        super().__init__(where + message)
