"""Replacing a file so that a crash leaves the old content or the new, never half of either."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def write_atomically(target: Path, content: bytes, mode: int, *, sync_folder: bool = True) -> None:
    """Temp file in the same folder (created 0600 by mkstemp), fsync, rename, fsync the folder.

    `sync_folder=False` leaves the folder's fsync to a caller that writes several files there
    and syncs it once after the last.
    """
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    if sync_folder:
        fsync_directory(target.parent)


def fsync_directory(directory: Path) -> None:
    """Makes a rename or unlink in `directory` durable: the entry lives in the directory's own
    blocks."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
