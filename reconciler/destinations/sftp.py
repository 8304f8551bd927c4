"""An SFTP destination: a directory on another host, over SSH (paramiko), connected with the
host-key policy and key lookup of `reconciler.sshconnect` (the same as for servers)."""

from __future__ import annotations

import posixpath
import stat
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO, cast

import paramiko

from reconciler.destinations import (
    BackupWriter,
    DestinationError,
    StoredBackup,
    check_name,
    directory_parts,
    modified_utc,
    partial_name,
)
from reconciler.models import SftpDestination
from reconciler.sshconnect import (
    SshConnectError,
    SshEndpoint,
    connect_arguments,
    host_key_error,
    known_hosts_file,
    trust_known_hosts,
)

_SFTP_TIMEOUT = 30.0
_SFTP_BUFFER = 1024 * 1024


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
            StoredBackup(entry.filename, entry.st_size or 0, modified_utc(entry.st_mtime or 0))
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


def open_sftp_store(destination: SftpDestination, known_hosts: Path | None) -> SftpStore:
    """`known_hosts` is the daemon's default, used when the destination does not name its own."""
    where = f"sftp://{destination.username}@{destination.host}:{destination.port}"
    endpoint = SshEndpoint(
        destination.host,
        destination.port,
        destination.username,
        known_hosts_file(destination.known_hosts, known_hosts),
        destination.accept_new_host_keys,
        destination.private_key,
    )
    client = _ssh_connect(endpoint, where)
    try:
        return SftpStore(client, destination.path, where)
    except BaseException:
        client.close()
        raise


def _ssh_connect(endpoint: SshEndpoint, where: str) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    try:
        trust_known_hosts(client, endpoint)
        client.connect(
            endpoint.host,
            port=endpoint.port,
            username=endpoint.username,
            **connect_arguments(endpoint, _SFTP_TIMEOUT),
        )
    except SshConnectError as exc:
        client.close()
        raise DestinationError(f"{where}: {exc}") from exc
    except paramiko.SSHException as exc:
        client.close()
        refused = host_key_error(endpoint, exc)
        raise DestinationError(f"{where}: {refused or exc}") from exc
    except OSError as exc:
        client.close()
        raise DestinationError(f"{where}: {exc.strerror or exc}") from exc
    return client
