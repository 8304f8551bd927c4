"""Where backups are stored: a local directory, a directory over SFTP, or an S3 bucket.

This module is the only one that reads or writes backup storage. A backup becomes visible under
its final name only on `commit` (temporary name + rename, or multipart upload completion), so a
listing, and therefore rotation, never sees a half-written backup. Temporaries are named
`.<name>.partial`: hidden, and never parseable as a backup name.

Directories and names come from validated models, but they are checked again here because this is
where a path escaping the destination root would do harm.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, Protocol

from reconciler.models import Destination, LocalDestination, SecretRef

_PARTIAL_RE = re.compile(r"^\.(?P<name>[^/\x00]+)\.partial$")
_MAX_NAME = 255


@dataclass(frozen=True, slots=True)
class StoredBackup:
    name: str
    size: int
    modified: datetime  # UTC


class DestinationError(Exception):
    """A destination operation failed; the message says which destination, what and why."""


class BackupWriter(Protocol):
    def write(self, chunk: bytes) -> None: ...

    def commit(self) -> None:
        """Make the backup visible under its final name; afterwards `abort` does nothing."""

    def abort(self) -> None:
        """Remove what was written so far; safe to call more than once, and after `commit`."""


class DestinationStore(Protocol):
    def open_writer(self, directory: str, name: str) -> BackupWriter: ...

    def list_backups(self, directory: str) -> list[StoredBackup]:
        """Files under their final names directly in `directory`; [] if it does not exist."""

    def delete(self, directory: str, name: str) -> None:
        """Delete one backup; deleting one that is already gone is not an error."""

    def open_reader(self, directory: str, name: str) -> AbstractContextManager[BinaryIO]: ...

    def remove_partials(self, directory: str) -> list[str]:
        """Remove temporaries left by a crash; the final names they were for.

        Only safe while no writer is active in `directory` (at startup, or for a task's own
        directory before its run when no other task shares it).
        """

    def close(self) -> None: ...


def partial_name(name: str) -> str:
    return f".{name}.partial"


def directory_parts(directory: str) -> list[str]:
    """`task.storage.path` as path components, refusing anything that could leave the root."""
    if "\x00" in directory or "\n" in directory or "\\" in directory:
        raise DestinationError(f"storage path {directory!r} contains NUL, newline or backslash")
    if directory.startswith("/"):
        raise DestinationError(f"storage path {directory!r} must be relative to the destination")
    parts = [part for part in directory.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise DestinationError(f"storage path {directory!r} must not contain '..'")
    return parts


def check_name(name: str) -> str:
    """A backup file name: one path component, not hidden (hidden names are our temporaries)."""
    if (
        not name
        or len(name) > _MAX_NAME
        or name.startswith(".")
        or any(bad in name for bad in ("/", "\\", "\x00", "\n"))
    ):
        raise DestinationError(
            f"backup name {name!r} must be one non-hidden path component without NUL or newline"
        )
    return name


# --- local ------------------------------------------------------------------------------------


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

    def write(self, chunk: bytes) -> None:
        if self._file is None:
            raise DestinationError(f"{self._final}: write after commit or abort")
        try:
            self._file.write(chunk)
        except OSError as exc:
            raise DestinationError(f"writing {self._partial}: {exc.strerror}") from exc

    def commit(self) -> None:
        if self._file is None:
            raise DestinationError(f"{self._final}: commit after commit or abort")
        file, self._file = self._file, None
        try:
            with file:
                file.flush()
                os.fsync(file.fileno())
            os.replace(self._partial, self._final)
            _fsync_directory(self._directory)
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


def _fsync_directory(directory: Path) -> None:
    """Make a rename durable: the directory entry lives in the directory's own blocks."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
                    StoredBackup(entry.name, info.st_size, _utc(info.st_mtime))
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

    def remove_partials(self, directory: str) -> list[str]:
        path = self._directory(directory, create=False)
        try:
            names = os.listdir(path)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise DestinationError(f"cannot list {path}: {exc.strerror}") from exc
        removed = []
        for name in sorted(names):
            match = _PARTIAL_RE.match(name)
            if match is not None:
                try:
                    (path / name).unlink(missing_ok=True)
                except OSError as exc:
                    raise DestinationError(f"cannot remove {path / name}: {exc.strerror}") from exc
                removed.append(match["name"])
        return removed

    def close(self) -> None:
        """Nothing is held open between calls."""


def _utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


def open_destination(
    destination: Destination, resolve_secret: Callable[[SecretRef], str]
) -> DestinationStore:
    """A store for `destination`; close it when done."""
    if isinstance(destination, LocalDestination):
        return LocalStore(destination.path)
    raise DestinationError(f"destination type {destination.type!r} is not supported yet")
