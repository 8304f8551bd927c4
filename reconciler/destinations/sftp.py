"""An SFTP destination: a directory on another host, over SSH (paramiko), with the host-key
policy of the destination's `known_hosts` and `accept_new_host_keys`."""

from __future__ import annotations

import os
import posixpath
import stat
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO, cast

import paramiko
from paramiko.pkey import PKey

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


def open_sftp_store(destination: SftpDestination) -> SftpStore:
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
