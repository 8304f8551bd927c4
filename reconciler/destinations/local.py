"""A local destination: a directory on the backup host, written through a hidden temporary that
is fsynced and renamed on commit."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO

from reconciler.atomicfile import fsync_directory
from reconciler.destinations import (
    BackupWriter,
    DestinationError,
    StoredBackup,
    check_name,
    directory_parts,
    modified_utc,
    partial_name,
)

# How much a local backup writes between two nudges to start writeback (see _start_writeback).
WRITEBACK_EVERY = 32 << 20


class _LocalWriter:
    def __init__(self, directory: Path, name: str) -> None:
        self._final = directory / name
        self._partial = directory / partial_name(name)
        self._directory = directory
        try:
            fd = os.open(
                self._partial,
                os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o600,
            )
        except OSError as exc:
            raise DestinationError(f"cannot create {self._partial}: {exc.strerror}") from exc
        self._file: BinaryIO | None = open(fd, "wb", buffering=1024 * 1024)  # noqa: SIM115
        self._committed = False
        self._unflushed = 0

    def write(self, chunk: bytes) -> None:
        if self._file is None:
            raise DestinationError(f"{self._final}: write after commit or abort")
        try:
            self._file.write(chunk)
            self._unflushed += len(chunk)
            if self._unflushed >= WRITEBACK_EVERY:
                self._file.flush()
                self._start_writeback(self._file.fileno())
        except OSError as exc:
            raise DestinationError(f"writing {self._partial}: {exc.strerror}") from exc

    def _start_writeback(self, fd: int) -> None:
        """Hand what is written so far to the disk now, and drop the pages it has already stored.

        POSIX_FADV_DONTNEED starts writeback of dirty pages and evicts clean ones: the final fsync
        then waits only for the tail, and a large backup does not push the backup host's own
        working set out of the page cache. It is only advice; a failure changes nothing.
        """
        self._unflushed = 0
        with suppress(OSError):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)

    def commit(self) -> None:
        if self._file is None:
            raise DestinationError(f"{self._final}: commit after commit or abort")
        file, self._file = self._file, None
        try:
            with file:
                file.flush()
                os.fsync(file.fileno())
            os.replace(self._partial, self._final)
            fsync_directory(self._directory)
        except OSError as exc:
            self._partial.unlink(missing_ok=True)
            raise DestinationError(f"storing {self._final}: {exc.strerror}") from exc
        self._committed = True

    def abort(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            with suppress(OSError):  # the partial is removed below either way
                file.close()
        if not self._committed:
            self._partial.unlink(missing_ok=True)


class LocalStore:
    """A directory on the backup host."""

    def __init__(self, root: str) -> None:
        if not root.startswith("/"):
            raise DestinationError(f"local destination path must be absolute, got {root!r}")
        self._root = Path(root)

    def _directory(self, directory: str, *, create: bool) -> Path:
        path = self._root.joinpath(*directory_parts(directory))
        try:
            if create:
                path.mkdir(parents=True, exist_ok=True, mode=0o700)
            # A symlink inside the root must not lead out of it.
            if path.exists() and not path.resolve().is_relative_to(self._root.resolve()):
                raise DestinationError(f"{path} resolves outside the destination {self._root}")
        except OSError as exc:
            raise DestinationError(f"cannot create directory {path}: {exc.strerror}") from exc
        return path

    def open_writer(self, directory: str, name: str) -> BackupWriter:
        return _LocalWriter(self._directory(directory, create=True), check_name(name))

    def list_backups(self, directory: str) -> list[StoredBackup]:
        path = self._directory(directory, create=False)
        try:
            with os.scandir(path) as entries:
                found = [
                    StoredBackup(entry.name, info.st_size, modified_utc(info.st_mtime))
                    for entry in entries
                    if not entry.name.startswith(".")
                    and stat.S_ISREG((info := entry.stat(follow_symlinks=False)).st_mode)
                ]
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise DestinationError(f"cannot list {path}: {exc.strerror}") from exc
        return sorted(found, key=lambda backup: backup.name)

    def delete(self, directory: str, name: str) -> None:
        path = self._directory(directory, create=False) / check_name(name)
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise DestinationError(f"cannot delete {path}: {exc.strerror}") from exc

    @contextmanager
    def open_reader(self, directory: str, name: str) -> Iterator[BinaryIO]:
        path = self._directory(directory, create=False) / check_name(name)
        try:
            file = open(path, "rb")  # noqa: SIM115 - closed by the with below
        except OSError as exc:
            raise DestinationError(f"cannot read {path}: {exc.strerror}") from exc
        with file:
            yield file

    def remove_partial(self, directory: str, name: str) -> bool:
        partial = self._directory(directory, create=False) / partial_name(check_name(name))
        try:
            partial.unlink()
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise DestinationError(f"cannot remove {partial}: {exc.strerror}") from exc
        return True

    def close(self) -> None:
        """Nothing is held open between calls."""
