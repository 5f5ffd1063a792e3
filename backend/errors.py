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


#: errno names of failures that are the machine's, not the program's: what the user can do about each.
_IO_HINTS = {
    "ENOSPC": "The disk is full: free some space there, or choose a folder on another disk.",
    "EDQUOT": "Your disk quota is used up: free some space, or choose a folder on another disk.",
    "EFBIG": "The file is larger than this file system allows: choose a folder on another disk.",
    "EACCES": "You may not write there: choose a folder you own, or change its permissions.",
    "EPERM": "You may not write there: choose a folder you own, or change its permissions.",
    "EROFS": "That file system is read-only: choose a folder on a writable disk.",
    "EIO": "The disk reported an input/output error: check the disk (or its connection) and try again, or choose "
           "another folder.",
    "ENOTDIR": "A part of the path is a file, not a folder: choose another path.",
    "EISDIR": "The path is a folder: give a file name.",
    "ENAMETOOLONG": "The path is too long: choose a shorter one.",
    "EMFILE": "Too many files are open: close other programs and try again.",
}


def io_error(exc: OSError, path: str | os.PathLike[str] | None = None, action: str = "write") -> BackendError | None:
    """A :class:`BackendError` for a failure of the disk or of permissions (``exc.errno`` one of full disk, quota,
    no permission, read-only file system, I/O error, ...), naming the file; None for other errors (bugs).

    Args:
        exc: the error.
        path: the file (default: ``exc.filename``).
        action: what was being done, for the message ("write", "read").
    """
    import errno as errno_module

    name = errno_module.errorcode.get(exc.errno or -1, "")
    hint = _IO_HINTS.get(name)
    if hint is None:
        return None
    where = path if path is not None else exc.filename
    reason = exc.strerror or name
    return BackendError(f"cannot {action} the file: {reason}", hint=hint, file=where)
