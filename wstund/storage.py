"""Writing state safely: atomic file replacement, and one clear answer when the disk refuses.

A full disk (ENOSPC, a quota, a file-size limit, SQLite's "database or disk is full") is 507
Insufficient Storage; any other failed write of state is a 500 ``storage_error``. Both carry
one line of text, never a traceback.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
from pathlib import Path

FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


class StorageError(Exception):
    """A write of state failed; ``status`` is 507 (disk full) or 500, ``code`` is stable."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def is_full(exc: BaseException) -> bool:
    """Whether ``exc`` says the disk (or a quota or size limit) is full."""
    if isinstance(exc, OSError):
        return exc.errno in FULL_ERRNOS
    if isinstance(exc, sqlite3.Error):
        return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
    return False


def failure(exc: OSError | sqlite3.Error, what: str | None = None) -> StorageError:
    """The StorageError for ``exc``, raised while writing ``what`` (None: some file I/O)."""
    detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    doing = f"cannot save {what}" if what else "storage error"
    if is_full(exc):
        return StorageError(507, "insufficient_storage", f"{doing}: {detail}")
    return StorageError(500, "storage_error", f"{doing}: {detail}")


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so readers see the old or the new content, never a
    part; on failure the old file stays and no temporary file is left (OSError raised)."""
    temp = path.with_name(f".{path.name}.tmp")
    try:
        with temp.open("w", encoding="utf-8") as sink:
            sink.write(text)
            sink.flush()
            os.fsync(sink.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise
