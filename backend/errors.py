"""Errors the backend reports to the user through an ``error`` message."""

from __future__ import annotations

import os


class BackendError(Exception):
    """A failure the user can act on: what went wrong, which file, and what to do.

    The CLI turns it into one ``error`` message and exit code :data:`protocol.EXIT_ERROR`.
    """

    def __init__(self, message: str, hint: str = "", file: str | os.PathLike[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint or "See the message above; run with --help for the options."
        self.file = str(file) if file is not None else None

    def __str__(self) -> str:
        where = f" ({self.file})" if self.file else ""
        return f"{self.message}{where}. {self.hint}"
