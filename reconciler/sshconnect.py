"""The one SSH policy, shared by the executor (servers) and the SFTP destination.

- Host keys: checked against one known_hosts file, the connection's own or else the daemon's
  `--known-hosts` (else `~/.ssh/known_hosts`). An unknown host is refused unless
  `accept_new_host_keys`; a changed key is always refused (paramiko raises BadHostKeyException
  before it consults the policy).
- Keys: only the configured `private_key` (or password) is offered: never the daemon user's
  `~/.ssh` defaults nor an agent, so a connection authenticates exactly as its YAML says.
- A newly trusted key is appended to known_hosts as one whole line with O_APPEND, under an
  exclusive flock. flock belongs to the open file description, so it excludes other threads of
  this process as well as other daemons; under it the file is read again, so a host that another
  connection remembered meanwhile is not written twice (and a different key for it is refused).
  Appending, rather than rewriting the file through a temporary file and a rename, keeps every
  other line as it was and cannot lose a line that an OpenSSH `ssh` (which appends without our
  lock) adds at the same moment.
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko
from paramiko.hostkeys import HostKeyEntry, InvalidHostKey
from paramiko.pkey import PKey

DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"


class SshConnectError(Exception):
    """An SSH connection could not be opened; the message says where and why."""


class SshHostKeyError(SshConnectError):
    """The host key is unknown (and not accepted) or differs from the recorded one."""


@dataclass(frozen=True, slots=True)
class SshEndpoint:
    """Where to connect and how to authenticate and trust it."""

    host: str
    port: int
    username: str
    known_hosts: Path
    accept_new_host_keys: bool = False
    private_key: str | None = None
    password: str | None = None

    def __repr__(self) -> str:  # the password must never reach a log through a repr
        return f"SshEndpoint({self.where})"

    @property
    def where(self) -> str:
        return f"{self.username}@{self.host}:{self.port}"


def known_hosts_file(configured: str | None, default: Path | None) -> Path:
    """The connection's own known_hosts, else the daemon's `--known-hosts`, else ~/.ssh's."""
    if configured is not None:
        return Path(configured).expanduser()
    if default is not None:
        return default.expanduser()
    return Path(DEFAULT_KNOWN_HOSTS).expanduser()


class _RememberNewHostKey(paramiko.MissingHostKeyPolicy):
    """`accept_new_host_keys`: trust a host seen for the first time and remember it."""

    def __init__(self, known_hosts: Path) -> None:
        self._known_hosts = known_hosts

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: PKey) -> None:
        recorded = append_host_key(self._known_hosts, hostname, key)
        if recorded is not None and recorded != key:
            raise paramiko.BadHostKeyException(hostname, key, recorded)
        client.get_host_keys().add(hostname, key.get_name(), key)


def append_host_key(known_hosts: Path, hostname: str, key: PKey) -> PKey | None:
    """Remember `key` for `hostname` unless the file already has a key for it.

    Returns the key recorded meanwhile by another connection (the caller refuses it if it
    differs), or None when this one was appended.
    """
    known_hosts.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    descriptor = os.open(known_hosts, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        entries = read_known_hosts(known_hosts).lookup(hostname)
        if entries is not None and len(entries) > 0:
            # As paramiko does for a loaded host: its key of this type, else any key it has.
            recorded: PKey = entries.get(key.get_name()) or next(iter(entries.values()))
            return recorded
        line = f"{hostname} {key.get_name()} {key.get_base64()}\n"
        size = os.fstat(descriptor).st_size
        if size and os.pread(descriptor, 1, size - 1) != b"\n":
            line = "\n" + line  # the file's last line had no newline: keep it whole
        os.write(descriptor, line.encode())
        os.fsync(descriptor)
        return None
    finally:
        os.close(descriptor)  # releases the lock


def read_known_hosts(known_hosts: Path, into: paramiko.HostKeys | None = None) -> paramiko.HostKeys:
    """The host keys in `known_hosts`, skipping lines paramiko cannot use.

    paramiko's own loader fails on the whole file at the first line it cannot parse, such as
    OpenSSH's `@cert-authority` and `@revoked` markers, which it does not support.
    """
    host_keys = into if into is not None else paramiko.HostKeys()
    with known_hosts.open(encoding="utf-8", errors="replace") as file:
        for line in file:
            if line.lstrip().startswith(("#", "@")):
                continue
            try:
                entry = HostKeyEntry.from_line(line)
            except (InvalidHostKey, paramiko.SSHException, ValueError):
                continue
            if entry is not None and entry.key is not None:
                for hostname in entry.hostnames:
                    host_keys.add(hostname, entry.key.get_name(), entry.key)
    return host_keys


def trust_known_hosts(client: paramiko.SSHClient, endpoint: SshEndpoint) -> None:
    """Load `endpoint.known_hosts` into `client` and install the host-key policy.

    Loaded into `get_host_keys()` rather than through `load_host_keys`, so the client never
    learns the file name and nothing (paramiko's AutoAddPolicy, `save_host_keys`) can rewrite it.
    """
    if endpoint.known_hosts.exists():
        try:
            read_known_hosts(endpoint.known_hosts, into=client.get_host_keys())
        except OSError as exc:
            raise SshConnectError(
                f"cannot read {endpoint.known_hosts}: {exc.strerror or exc}"
            ) from exc
    policy: paramiko.MissingHostKeyPolicy = (
        _RememberNewHostKey(endpoint.known_hosts)
        if endpoint.accept_new_host_keys
        else paramiko.RejectPolicy()
    )
    client.set_missing_host_key_policy(policy)


def connect_arguments(endpoint: SshEndpoint, timeout: float) -> dict[str, Any]:
    """paramiko `SSHClient.connect` keywords: the one key lookup and the timeouts."""
    arguments: dict[str, Any] = {
        "look_for_keys": False,
        "allow_agent": False,
        "timeout": timeout,
        "banner_timeout": timeout,
        "auth_timeout": timeout,
    }
    if endpoint.private_key:
        arguments["key_filename"] = str(Path(endpoint.private_key).expanduser())
    if endpoint.password is not None:
        arguments["password"] = endpoint.password
    return arguments


def host_key_error(endpoint: SshEndpoint, exc: paramiko.SSHException) -> SshHostKeyError | None:
    """The plain error for a refused host key, or None when `exc` is about something else."""
    where, known_hosts = endpoint.where, endpoint.known_hosts
    if isinstance(exc, paramiko.BadHostKeyException):
        return SshHostKeyError(
            f"host key of {where} does not match {known_hosts}: refusing to connect "
            "(if the server was reinstalled, remove its old line from that file)"
        )
    if "not found in known_hosts" in str(exc):
        return SshHostKeyError(
            f"host key of {where} is not in {known_hosts}: add it (ssh-keyscan) "
            "or set accept_new_host_keys"
        )
    return None
