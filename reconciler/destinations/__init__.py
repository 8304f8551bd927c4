"""Where backups are stored: a local directory, a directory over SFTP, an S3 bucket or a restic
repository.

This package is the only code that reads or writes backup storage. Here is what every kind shares:
the store and writer protocols, the error, the checks on directories and names, and
`open_destination`; each kind lives in a module of its own (`local`, `sftp`, `s3`, `restic`),
imported only when a destination of that kind is opened, so a daemon without S3 destinations never
loads boto3.

A backup becomes visible under its final name only on `commit` (temporary name + rename, or
multipart upload completion), so a listing, and therefore rotation, never sees a half-written
backup. Temporaries are named `.<name>.partial`: hidden, and never parseable as a backup name.

Directories and names come from validated models, but they are checked again here because this is
where a path escaping the destination root would do harm.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, Protocol

from reconciler.models import (
    Destination,
    LocalDestination,
    ResticDestination,
    SecretRef,
    SftpDestination,
    path_problem,
)
from reconciler.repolocks import RepositoryLocks
from reconciler.types import ReconcilerError

# S3's defaults live here, not in the s3 module, so that naming them does not import boto3.
S3_PART_SIZE = 8 * 1024 * 1024
S3_PAGE_SIZE = 1000  # the most S3 returns in one listing page
_MAX_NAME = 255


@dataclass(frozen=True, slots=True)
class StoredBackup:
    name: str
    size: int
    modified: datetime  # UTC


class DestinationError(ReconcilerError):
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

    def remove_partial(self, directory: str, name: str) -> bool:
        """Remove what a crashed writer of `name` left (its temporary file, or its unfinished
        upload); False if there was nothing. Only safe while no writer of `name` is active."""

    def close(self) -> None: ...


def partial_name(name: str) -> str:
    return f".{name}.partial"


def directory_parts(directory: str, what: str = "storage path") -> list[str]:
    """`task.storage.path` as path components, refusing anything that could leave the root."""
    problem = path_problem(directory)
    if problem is not None:
        raise DestinationError(f"{what} {directory!r} {problem}")
    if directory.startswith("/"):
        raise DestinationError(f"{what} {directory!r} must be relative to the destination")
    return [part for part in directory.split("/") if part not in ("", ".")]


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


def modified_utc(mtime: float) -> datetime:
    """A file's POSIX modification time (local disk or SFTP) as `StoredBackup.modified`."""
    return datetime.fromtimestamp(mtime, UTC)


def open_destination(
    destination: Destination,
    resolve_secret: Callable[[SecretRef], str],
    *,
    known_hosts: Path | None = None,
    repository_locks: RepositoryLocks | None = None,
    timezone: str | None = None,
    s3_part_size: int = S3_PART_SIZE,
    s3_page_size: int = S3_PAGE_SIZE,
) -> DestinationStore:
    """A store for `destination`; close it when done.

    `known_hosts` is the daemon's `--known-hosts`, for an SFTP destination that names no file.
    `repository_locks` are the daemon's locks on restic repositories (see `repolocks`), and
    `timezone` the task's, which a restic snapshot's time is written in.

    The S3 sizes exist for tests and benchmarks (a listing of several pages without writing
    thousands of objects); the defaults suit S3.
    """
    # Imported here, not at the top: each kind's client library is loaded only when it is used.
    if isinstance(destination, LocalDestination):
        from reconciler.destinations.local import LocalStore

        return LocalStore(destination.path)
    if isinstance(destination, SftpDestination):
        from reconciler.destinations.sftp import open_sftp_store

        return open_sftp_store(destination, known_hosts)
    if isinstance(destination, ResticDestination):
        from reconciler.destinations.restic import ResticStore

        return ResticStore(destination, resolve_secret, locks=repository_locks, timezone=timezone)
    from reconciler.destinations.s3 import open_s3_store

    return open_s3_store(destination, resolve_secret, s3_part_size, s3_page_size)
