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
import posixpath
import stat
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, Protocol, cast

import boto3
import paramiko
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError
from paramiko.pkey import PKey

from reconciler.models import (
    Destination,
    LocalDestination,
    S3Destination,
    SecretRef,
    SftpDestination,
    path_problem,
)
from reconciler.types import ReconcilerError

# How much a local backup writes between two nudges to start writeback (see _start_writeback).
WRITEBACK_EVERY = 32 << 20
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


# --- sftp -------------------------------------------------------------------------------------

_SFTP_TIMEOUT = 30.0
_SFTP_BUFFER = 1024 * 1024


class _RememberNewHostKey(paramiko.MissingHostKeyPolicy):
    """`accept_new_host_keys`: trust a host seen for the first time and append it to known_hosts.

    Only a host with no entry at all gets here; a changed key still fails (BadHostKeyException).
    Appending, rather than paramiko's save, leaves the rest of the file exactly as it was.
    """

    def __init__(self, known_hosts: Path) -> None:
        self._known_hosts = known_hosts

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: PKey) -> None:
        with self._known_hosts.open("a") as file:
            file.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")
        client.get_host_keys().add(hostname, key.get_name(), key)


class _SftpWriter:
    def __init__(self, sftp: paramiko.SFTPClient, directory: str, name: str, where: str) -> None:
        self._sftp = sftp
        self._final = posixpath.join(directory, name)
        self._partial = posixpath.join(directory, partial_name(name))
        self._where = where
        with _sftp_errors(f"creating {where}{self._partial}"):
            file = sftp.open(self._partial, "wb", bufsize=_SFTP_BUFFER)
            file.chmod(0o600)
        # Send writes without waiting for each acknowledgement; close() collects them.
        file.set_pipelined(True)
        self._file: paramiko.SFTPFile | None = file
        self._committed = False

    def write(self, chunk: bytes) -> None:
        if self._file is None:
            raise DestinationError(f"{self._where}{self._final}: write after commit or abort")
        with _sftp_errors(f"writing {self._where}{self._partial}"):
            self._file.write(chunk)

    def commit(self) -> None:
        if self._file is None:
            raise DestinationError(f"{self._where}{self._final}: commit after commit or abort")
        file, self._file = self._file, None
        try:
            with _sftp_errors(f"storing {self._where}{self._final}"):
                file.close()
                self._sftp.posix_rename(self._partial, self._final)
        except DestinationError:
            self._remove_partial()
            raise
        self._committed = True

    def abort(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            with suppress(OSError, paramiko.SSHException):  # the partial is removed below
                file.close()
        if not self._committed:
            self._remove_partial()

    def _remove_partial(self) -> None:
        with suppress(OSError, paramiko.SSHException):  # remove_partial catches what this misses
            self._sftp.remove(self._partial)


@contextmanager
def _sftp_errors(doing: str) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise DestinationError(f"{doing}: {exc.strerror or exc}") from exc
    except paramiko.SSHException as exc:
        raise DestinationError(f"{doing}: {exc}") from exc


class SftpStore:
    """A directory on another host, over SFTP."""

    def __init__(self, client: paramiko.SSHClient, root: str, where: str) -> None:
        if not root.startswith("/"):
            raise DestinationError(f"sftp destination path must be absolute, got {root!r}")
        self._client = client
        self._where = where
        with _sftp_errors(f"starting sftp on {where}"):
            self._sftp = client.open_sftp()
        self._root = posixpath.normpath(root)

    def _directory(self, directory: str) -> str:
        return posixpath.join(self._root, *directory_parts(directory))

    def _make_directories(self, path: str) -> None:
        current = "/"
        for part in path.strip("/").split("/"):
            current = posixpath.join(current, part)
            try:
                self._sftp.stat(current)
            except FileNotFoundError:
                with _sftp_errors(f"creating directory {self._where}{current}"):
                    try:
                        self._sftp.mkdir(current, 0o700)
                    except OSError:
                        self._sftp.stat(current)  # created meanwhile by someone else is fine
            except (OSError, paramiko.SSHException) as exc:
                raise DestinationError(f"checking {self._where}{current}: {exc}") from exc

    def open_writer(self, directory: str, name: str) -> BackupWriter:
        path = self._directory(directory)
        check_name(name)
        self._make_directories(path)
        return _SftpWriter(self._sftp, path, name, self._where)

    def list_backups(self, directory: str) -> list[StoredBackup]:
        path = self._directory(directory)
        try:
            with _sftp_errors(f"listing {self._where}{path}"):
                entries = self._sftp.listdir_attr(path)
        except DestinationError as exc:
            if isinstance(exc.__cause__, FileNotFoundError):
                return []
            raise
        found = [
            StoredBackup(entry.filename, entry.st_size or 0, _utc(entry.st_mtime or 0))
            for entry in entries
            if not entry.filename.startswith(".") and stat.S_ISREG(entry.st_mode or 0)
        ]
        return sorted(found, key=lambda backup: backup.name)

    def delete(self, directory: str, name: str) -> None:
        path = posixpath.join(self._directory(directory), check_name(name))
        with _sftp_errors(f"deleting {self._where}{path}"), suppress(FileNotFoundError):
            self._sftp.remove(path)

    @contextmanager
    def open_reader(self, directory: str, name: str) -> Iterator[BinaryIO]:
        path = posixpath.join(self._directory(directory), check_name(name))
        with _sftp_errors(f"reading {self._where}{path}"):
            file = self._sftp.open(path, "rb", bufsize=_SFTP_BUFFER)
        with file:
            file.prefetch()  # keeps many read requests in flight: streaming speed
            yield cast(BinaryIO, file)

    def remove_partial(self, directory: str, name: str) -> bool:
        partial = posixpath.join(self._directory(directory), partial_name(check_name(name)))
        try:
            with _sftp_errors(f"removing {self._where}{partial}"):
                self._sftp.remove(partial)
        except DestinationError as exc:
            if isinstance(exc.__cause__, FileNotFoundError):
                return False
            raise
        return True

    def close(self) -> None:
        self._sftp.close()
        self._client.close()


def _sftp_store(destination: SftpDestination) -> SftpStore:
    where = f"sftp://{destination.username}@{destination.host}:{destination.port}"
    client = _ssh_connect(destination, where)
    try:
        return SftpStore(client, destination.path, where)
    except BaseException:
        client.close()
        raise


def _ssh_connect(destination: SftpDestination, where: str) -> paramiko.SSHClient:
    known_hosts = Path(os.path.expanduser(destination.known_hosts or "~/.ssh/known_hosts"))
    client = paramiko.SSHClient()
    try:
        if destination.accept_new_host_keys:
            known_hosts.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            known_hosts.touch(mode=0o600, exist_ok=True)
            client.set_missing_host_key_policy(_RememberNewHostKey(known_hosts))
        else:
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
        if known_hosts.exists():
            client.load_system_host_keys(str(known_hosts))
        client.connect(
            destination.host,
            port=destination.port,
            username=destination.username,
            key_filename=(
                os.path.expanduser(destination.private_key) if destination.private_key else None
            ),
            look_for_keys=destination.private_key is None,
            allow_agent=False,
            timeout=_SFTP_TIMEOUT,
            banner_timeout=_SFTP_TIMEOUT,
            auth_timeout=_SFTP_TIMEOUT,
        )
    except paramiko.BadHostKeyException as exc:
        client.close()
        raise DestinationError(
            f"{where}: the host key does not match the one in {known_hosts}; "
            "if the server was really reinstalled, remove its old line from that file"
        ) from exc
    except paramiko.SSHException as exc:
        client.close()
        hint = ""
        if "not found in known_hosts" in str(exc):
            hint = f" (not in {known_hosts}; add it, or set accept_new_host_keys: true)"
        raise DestinationError(f"{where}: {exc}{hint}") from exc
    except OSError as exc:
        client.close()
        raise DestinationError(f"{where}: {exc.strerror or exc}") from exc
    return client


# --- s3 ---------------------------------------------------------------------------------------

S3_PART_SIZE = 8 * 1024 * 1024
S3_PAGE_SIZE = 1000  # the most S3 returns in one listing page
# S3 allows at most 10,000 parts: the part size doubles every 1,000 parts, so a backup can grow to
# terabytes while small ones still upload in 8 MiB steps.
_PARTS_PER_SIZE_STEP = 1000


class _S3Writer:
    """A multipart upload, started lazily: a backup smaller than one part is a single PUT."""

    def __init__(self, client: Any, bucket: str, key: str, part_size: int) -> None:
        self._client, self._bucket, self._key = client, bucket, key
        self._part_size = part_size
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []
        self._open = True
        self._committed = False

    def _where(self) -> str:
        return f"s3://{self._bucket}/{self._key}"

    def write(self, chunk: bytes) -> None:
        if not self._open:
            raise DestinationError(f"{self._where()}: write after commit or abort")
        self._buffer += chunk
        if len(self._buffer) >= self._current_part_size():
            self._upload_part()

    def _current_part_size(self) -> int:
        return int(self._part_size << (len(self._parts) // _PARTS_PER_SIZE_STEP))

    def _upload_part(self) -> None:
        body, self._buffer = self._buffer, bytearray()
        number = len(self._parts) + 1
        with _s3_errors(f"uploading part {number} of {self._where()}"):
            if self._upload_id is None:
                created = self._client.create_multipart_upload(
                    Bucket=self._bucket, Key=self._key, ChecksumAlgorithm="CRC32"
                )
                self._upload_id = created["UploadId"]
            response = self._client.upload_part(
                Bucket=self._bucket,
                Key=self._key,
                UploadId=self._upload_id,
                PartNumber=number,
                Body=bytes(body),
                ChecksumAlgorithm="CRC32",
            )
        # The upload was created with a checksum algorithm, so completing it needs each part's.
        self._parts.append(
            {
                "PartNumber": number,
                "ETag": response["ETag"],
                "ChecksumCRC32": response["ChecksumCRC32"],
            }
        )

    def commit(self) -> None:
        if not self._open:
            raise DestinationError(f"{self._where()}: commit after commit or abort")
        self._open = False
        try:
            if self._upload_id is None:
                with _s3_errors(f"storing {self._where()}"):
                    self._client.put_object(
                        Bucket=self._bucket, Key=self._key, Body=bytes(self._buffer)
                    )
            else:
                if self._buffer:
                    self._upload_part()
                with _s3_errors(f"completing {self._where()}"):
                    self._client.complete_multipart_upload(
                        Bucket=self._bucket,
                        Key=self._key,
                        UploadId=self._upload_id,
                        MultipartUpload={"Parts": self._parts},
                    )
        except DestinationError:
            self._abort_upload()
            raise
        self._committed = True

    def abort(self) -> None:
        self._open = False
        self._buffer = bytearray()
        if not self._committed:
            self._abort_upload()

    def _abort_upload(self) -> None:
        upload_id, self._upload_id = self._upload_id, None
        if upload_id is not None:
            with suppress(ClientError, BotoCoreError):  # remove_partial catches what this misses
                self._client.abort_multipart_upload(
                    Bucket=self._bucket, Key=self._key, UploadId=upload_id
                )


@contextmanager
def _s3_errors(doing: str) -> Iterator[None]:
    try:
        yield
    except ClientError as exc:
        error = exc.response.get("Error", {})
        raise DestinationError(
            f"{doing}: {error.get('Code', 'error')}: {error.get('Message', '')}".rstrip(": ")
        ) from exc
    except BotoCoreError as exc:
        raise DestinationError(f"{doing}: {exc}") from exc


class S3Store:
    """Objects under `prefix` in one bucket; a directory is a further key prefix."""

    def __init__(
        self,
        client: Any,
        bucket: str,
        prefix: str,
        *,
        part_size: int = S3_PART_SIZE,
        page_size: int = S3_PAGE_SIZE,
    ) -> None:
        self._client, self._bucket = client, bucket
        # "/backups" and "backups" mean the same to people; S3 would make them different keys.
        self._prefix = directory_parts(prefix.lstrip("/"), "s3 prefix")
        self._part_size, self._page_size = part_size, page_size

    def _key_prefix(self, directory: str) -> str:
        parts = [*self._prefix, *directory_parts(directory)]
        return "".join(f"{part}/" for part in parts)

    def _key(self, directory: str, name: str) -> str:
        return self._key_prefix(directory) + check_name(name)

    def open_writer(self, directory: str, name: str) -> BackupWriter:
        return _S3Writer(self._client, self._bucket, self._key(directory, name), self._part_size)

    def _pages(self, operation: str, directory: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """(name, entry) for every entry of every page directly under `directory`."""
        prefix = self._key_prefix(directory)
        pages = self._client.get_paginator(operation).paginate(
            Bucket=self._bucket,
            Prefix=prefix,
            Delimiter="/",
            PaginationConfig={"PageSize": self._page_size},
        )
        field = "Contents" if operation == "list_objects_v2" else "Uploads"
        with _s3_errors(f"listing s3://{self._bucket}/{prefix}"):
            for page in pages:
                for entry in page.get(field, []):
                    name = entry["Key"][len(prefix) :]
                    if name and "/" not in name and not name.startswith("."):
                        yield name, entry

    def list_backups(self, directory: str) -> list[StoredBackup]:
        found = [
            StoredBackup(name, int(entry["Size"]), entry["LastModified"].astimezone(UTC))
            for name, entry in self._pages("list_objects_v2", directory)
        ]
        return sorted(found, key=lambda backup: backup.name)

    def delete(self, directory: str, name: str) -> None:
        key = self._key(directory, name)
        with _s3_errors(f"deleting s3://{self._bucket}/{key}"):
            self._client.delete_object(Bucket=self._bucket, Key=key)

    @contextmanager
    def open_reader(self, directory: str, name: str) -> Iterator[BinaryIO]:
        key = self._key(directory, name)
        with _s3_errors(f"reading s3://{self._bucket}/{key}"):
            body = self._client.get_object(Bucket=self._bucket, Key=key)["Body"]
        try:
            yield cast(BinaryIO, body)
        finally:
            body.close()

    def remove_partial(self, directory: str, name: str) -> bool:
        removed = False
        for found, upload in list(self._pages("list_multipart_uploads", directory)):
            if found != check_name(name):
                continue
            with _s3_errors(f"aborting the upload of s3://{self._bucket}/{upload['Key']}"):
                self._client.abort_multipart_upload(
                    Bucket=self._bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                )
            removed = True
        return removed

    def close(self) -> None:
        self._client.close()


def _s3_store(
    destination: S3Destination,
    resolve_secret: Callable[[SecretRef], str],
    part_size: int,
    page_size: int,
) -> S3Store:
    if (destination.access_key_id is None) != (destination.secret_access_key is None):
        raise DestinationError(
            f"s3 destination {destination.id} ({destination.label}): give both access_key_id "
            "and secret_access_key, or neither to use the daemon's default AWS credentials"
        )
    credentials = {}
    if destination.access_key_id is not None and destination.secret_access_key is not None:
        credentials = {
            "aws_access_key_id": resolve_secret(destination.access_key_id),
            "aws_secret_access_key": resolve_secret(destination.secret_access_key),
        }
    # A session of its own: boto3's default session is shared module state and not thread-safe.
    session = boto3.session.Session(region_name=destination.region, **credentials)
    config = BotoConfig(
        retries={"mode": "standard", "max_attempts": 5},
        connect_timeout=10,
        read_timeout=120,
        # S3-compatible servers behind a custom endpoint rarely have wildcard DNS for buckets.
        s3={"addressing_style": "path" if destination.endpoint_url else "auto"},
    )
    client = session.client("s3", endpoint_url=destination.endpoint_url, config=config)
    return S3Store(
        client, destination.bucket, destination.prefix, part_size=part_size, page_size=page_size
    )


def _utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


def open_destination(
    destination: Destination,
    resolve_secret: Callable[[SecretRef], str],
    *,
    s3_part_size: int = S3_PART_SIZE,
    s3_page_size: int = S3_PAGE_SIZE,
) -> DestinationStore:
    """A store for `destination`; close it when done.

    The S3 sizes exist for tests and benchmarks (a listing of several pages without writing
    thousands of objects); the defaults suit S3.
    """
    if isinstance(destination, LocalDestination):
        return LocalStore(destination.path)
    if isinstance(destination, SftpDestination):
        return _sftp_store(destination)
    return _s3_store(destination, resolve_secret, s3_part_size, s3_page_size)
