"""The one owner of SSH: connect to a remote server and stream a command's output.

Connections are opened by Fabric (`fabric.Connection`) over paramiko, with two of Fabric's defaults
overridden: its AutoAddPolicy (which accepts any host key) is replaced before connecting by the
host-key policy and key lookup of `reconciler.sshconnect` (shared with the SFTP destination); and
no ssh_config or Fabric config file is read, so a file in the daemon's home cannot redirect or
alter a connection.

A command's stdout is read from a raw paramiko channel in chunks of up to 4 MiB and handed to a
sink as it arrives (Fabric's `run` keeps all output in memory), so nothing is staged on the remote
disk or held whole in memory; stderr is collected (bounded) and passed on line by line for the
run log.

Throughput: a 16 MiB window, 256 KiB packets and AES-GCM first (no separate MAC pass) beat
paramiko's defaults (2 MiB, 32 KiB, aes128-ctr with an HMAC), which stall on the window. Reads of
4 MiB rather than 1 MiB matter when the stream outruns us: paramiko's buffer moves what is left
after each read, so small reads from a full window copy it over and over (1 GB uncompressed:
ratio to OpenSSH 0.71 with 1 MiB reads, 0.91 with 4 MiB; 16 MiB reads took the peak RSS past
150 MB). See bench/bench_backup.py and BENCHMARKS.md.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import fabric
import paramiko

from reconciler.models import RemoteServer
from reconciler.sshconnect import (
    SshConnectError,
    SshEndpoint,
    connect_arguments,
    host_key_error,
    known_hosts_file,
    trust_known_hosts,
)

CHUNK_SIZE = 4 << 20
WINDOW_SIZE = 16 << 20
MAX_PACKET_SIZE = 256 << 10
# Each of: the TCP connect, the server's SSH banner, the key exchange, authentication, opening the
# session and the server's answer to the command (a server that accepts TCP and never speaks SSH
# fails after this long).
CONNECT_TIMEOUT = 15.0
# A command that sends nothing (stdout or stderr) for this long has stalled, or its connection has:
# it fails then rather than at the end of its run timeout. 0 disables.
STALL_TIMEOUT = 600.0
KEEPALIVE_SECONDS = 15
STDERR_KEEP_LINES = 200
# Weak CBC/3DES modes are never offered; AES-GCM is preferred for speed.
PREFERRED_CIPHERS = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "aes128-ctr",
    "aes256-ctr",
    "aes192-ctr",
)
_POLL_SECONDS = 0.25
# What paramiko reports when no exit-status message came: the connection closed, or the command
# was killed by a signal (OpenSSH then sends exit-signal, which paramiko does not record).
_NO_EXIT_STATUS = -1
# What paramiko says when the server never sent its banner, or the key exchange outlasted the
# timeout (paramiko then goes on to authenticate a session that never started).
_HANDSHAKE_UNFINISHED = ("Error reading SSH protocol banner", "No existing session")


class ExecutorError(Exception):
    """The remote server could not be reached, or a command could not run on it."""


class HostKeyError(ExecutorError):
    """The server's host key is unknown (and not accepted) or differs from the recorded one."""


class CommandTimeout(ExecutorError):
    """The remote command did not finish within its run timeout."""


class CommandCancelled(ExecutorError):
    """The caller asked the command to stop (the daemon is shutting down)."""


class CommandStalled(ExecutorError):
    """Nothing arrived from the remote command for longer than the stall timeout."""


@dataclass(frozen=True, slots=True)
class SshTarget:
    host: str
    port: int
    username: str
    private_key: str | None = None
    password: str | None = None
    known_hosts: str | None = None  # None: ~/.ssh/known_hosts of the daemon's user
    accept_new_host_keys: bool = False

    def __repr__(self) -> str:  # the password must never reach a log through a repr
        return f"SshTarget({self.username}@{self.host}:{self.port})"

    def endpoint(self) -> SshEndpoint:
        return SshEndpoint(
            self.host,
            self.port,
            self.username,
            known_hosts_file(self.known_hosts, None),
            self.accept_new_host_keys,
            self.private_key,
            self.password,
        )

    @classmethod
    def for_server(
        cls,
        server: RemoteServer,
        *,
        isolated_username: str | None = None,
        isolated_password: str | None = None,
        known_hosts: Path | None = None,
    ) -> SshTarget:
        """How to reach `server`; per-task isolated credentials replace its user and key.

        `known_hosts` is the daemon's default, used when the server does not name its own file.
        """
        default = str(known_hosts) if known_hosts is not None else None
        if isolated_username is not None:
            return cls(
                server.host,
                server.port,
                isolated_username,
                password=isolated_password,
                known_hosts=server.known_hosts or default,
                accept_new_host_keys=server.accept_new_host_keys,
            )
        return cls(
            server.host,
            server.port,
            server.username,
            private_key=server.private_key,
            known_hosts=server.known_hosts or default,
            accept_new_host_keys=server.accept_new_host_keys,
        )


@dataclass(frozen=True, slots=True)
class CommandResult:
    exit_status: int
    stdout_bytes: int
    stderr_tail: tuple[str, ...]


def _transport_factory(sock: Any, /, **kwargs: Any) -> paramiko.Transport:
    # paramiko 3.x passes disabled_algorithms only; the stubs also name gss_* arguments.
    disabled_algorithms = kwargs.get("disabled_algorithms")
    transport = paramiko.Transport(
        sock,
        default_window_size=WINDOW_SIZE,
        default_max_packet_size=MAX_PACKET_SIZE,
        disabled_algorithms=disabled_algorithms,
    )
    transport.get_security_options().ciphers = PREFERRED_CIPHERS
    return transport


class OutputLines:
    """Splits a command's output into lines for the log, keeping only the last few in memory."""

    def __init__(self, on_line: Callable[[str], None] | None) -> None:
        self._on_line = on_line
        self._pending = b""
        self.tail: deque[str] = deque(maxlen=STDERR_KEEP_LINES)

    def feed(self, data: bytes) -> None:
        self._pending += data
        *lines, self._pending = self._pending.split(b"\n")
        for line in lines:
            self._emit(line)
        if len(self._pending) > 64 << 10:  # a runaway line without newlines
            self._emit(self._pending)
            self._pending = b""

    def flush(self) -> None:
        if self._pending:
            self._emit(self._pending)
            self._pending = b""

    def _emit(self, raw: bytes) -> None:
        line = raw.decode("utf-8", errors="replace").rstrip("\r")
        self.tail.append(line)
        if self._on_line is not None:
            self._on_line(line)


class RemoteShell:
    """One SSH connection; use as a context manager. Not thread-safe: one per run."""

    def __init__(
        self,
        target: SshTarget,
        *,
        connect_timeout: float = CONNECT_TIMEOUT,
        stall_timeout: float = STALL_TIMEOUT,
        keepalive_seconds: int = KEEPALIVE_SECONDS,
    ) -> None:
        self._target = target
        self._connect_timeout = connect_timeout
        self._stall_timeout = stall_timeout
        self._keepalive = keepalive_seconds
        self._connection: fabric.Connection | None = None

    def __enter__(self) -> RemoteShell:
        self.connect()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def connect(self) -> None:
        endpoint = self._target.endpoint()
        connection = self._connection_for(endpoint)
        where = endpoint.where
        try:
            trust_known_hosts(connection.client, endpoint)
            connection.open()
        except SshConnectError as exc:
            raise ExecutorError(str(exc)) from exc
        except paramiko.SSHException as exc:
            connection.client.close()  # Fabric only closes a connection it saw open
            refused = host_key_error(endpoint, exc)
            if refused is not None:
                raise HostKeyError(str(refused)) from exc
            if any(text in str(exc) for text in _HANDSHAKE_UNFINISHED):
                raise ExecutorError(
                    f"cannot connect to {where}: the server accepted the connection but did not "
                    f"complete the SSH handshake within {self._connect_timeout:g} s (is it an SSH "
                    f"server?): {exc}"
                ) from exc
            raise ExecutorError(f"cannot connect to {where}: {exc}") from exc
        except OSError as exc:
            connection.client.close()  # Fabric only closes a connection it saw open
            raise ExecutorError(f"cannot connect to {where}: {exc}") from exc
        transport = connection.transport
        if transport is None:  # pragma: no cover - open() either sets it or raises
            raise ExecutorError(f"cannot connect to {where}: no transport")
        transport.set_keepalive(self._keepalive)
        self._connection = connection

    def _connection_for(self, endpoint: SshEndpoint) -> fabric.Connection:
        """A Fabric connection that sees only `endpoint`: no ssh_config, no Fabric config files.

        `Config(lazy=True)` loads neither /etc/fabric.yml nor ~/.fabric.yml, and an explicit empty
        SSHConfig keeps ~/.ssh/config and /etc/ssh/ssh_config (HostName, ProxyCommand, User...)
        from redirecting the connection.

        The connect timeout goes in connect_kwargs rather than Fabric's `connect_timeout`, which
        truncates it to an int (0.5 s would become 0: no timeout at all).
        """
        connect_kwargs = connect_arguments(endpoint, self._connect_timeout)
        connect_kwargs["transport_factory"] = _transport_factory
        return fabric.Connection(
            endpoint.host,
            user=endpoint.username,
            port=endpoint.port,
            config=fabric.Config(lazy=True, ssh_config=paramiko.SSHConfig()),
            connect_kwargs=connect_kwargs,
            forward_agent=False,
            gateway=False,
        )

    def cipher(self) -> str:
        """The negotiated cipher (for diagnostics and the benchmark)."""
        transport = self._transport()
        if transport is None:
            raise ExecutorError("not connected")
        return str(getattr(transport, "remote_cipher", ""))  # untyped in the stubs

    def _transport(self) -> paramiko.Transport | None:
        if self._connection is None:
            return None
        transport: paramiko.Transport | None = self._connection.client.get_transport()
        return transport

    @property
    def connection(self) -> fabric.Connection:
        """The open Fabric connection (for diagnostics; runs go through `stream`)."""
        if self._connection is None:
            raise ExecutorError("not connected")
        return self._connection

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def stream(
        self,
        command: str,
        sink: Callable[[bytes], None],
        *,
        stdin: bytes | Iterable[bytes] = b"",
        timeout: float,
        on_stderr_line: Callable[[str], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> CommandResult:
        """Run `command`, handing its stdout to `sink` in chunks as it arrives.

        `stdin` (bytes, or chunks of them read as they are sent: a dump loaded into a database) is
        written first and then closed (so secrets reach the command through a pipe).
        Raises CommandTimeout when the command runs longer than `timeout` seconds, CommandStalled
        when nothing arrives for the stall timeout, and CommandCancelled soon after `cancel` is
        set; closing the channel stops the remote command.
        """
        if self._connection is None:
            raise ExecutorError("not connected")
        transport = self._transport()
        if transport is None or not transport.is_active():
            raise ExecutorError("the SSH connection was lost")
        deadline = time.monotonic() + timeout
        try:
            channel = transport.open_session(
                window_size=WINDOW_SIZE,
                max_packet_size=MAX_PACKET_SIZE,
                timeout=self._connect_timeout,
            )
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise CommandStalled(
                f"could not open a session on the server (connect timeout "
                f"{self._connect_timeout:g} s): {exc}"
            ) from exc
        stderr = OutputLines(on_stderr_line)
        received = 0
        try:
            channel.settimeout(_POLL_SECONDS)
            self._exec(transport, channel, command)
            for chunk in (stdin,) if isinstance(stdin, bytes) else stdin:
                # What the command writes meanwhile is read, so that it never blocks on a full
                # window while we block on its stdin.
                while channel.recv_stderr_ready():
                    stderr.feed(channel.recv_stderr(CHUNK_SIZE))
                while channel.recv_ready():
                    data = channel.recv(CHUNK_SIZE)
                    received += len(data)
                    sink(data)
                self._check(deadline, timeout, cancel)
                try:
                    channel.sendall(chunk)
                except OSError:  # it exited before reading all of it: its status says why
                    break
            channel.shutdown_write()
            heard = time.monotonic()  # when the command last sent anything
            while True:
                while channel.recv_stderr_ready():
                    stderr.feed(channel.recv_stderr(CHUNK_SIZE))
                    heard = time.monotonic()
                self._check(deadline, timeout, cancel)
                self._check_stall(heard)
                try:
                    data = channel.recv(CHUNK_SIZE)
                except TimeoutError:
                    continue
                if not data:
                    break
                heard = time.monotonic()
                received += len(data)
                sink(data)
            while not channel.exit_status_ready():
                self._check(deadline, timeout, cancel)
                self._check_stall(heard)
                time.sleep(0.01)
            self._drain_stderr(channel, stderr)
            stderr.flush()
            return CommandResult(self._exit_status(channel), received, tuple(stderr.tail))
        except paramiko.SSHException as exc:
            raise ExecutorError(f"the SSH connection failed during the command: {exc}") from exc
        finally:
            channel.close()

    def _exec(self, transport: paramiko.Transport, channel: paramiko.Channel, command: str) -> None:
        """Start `command`, bounded by the connect timeout: paramiko waits for the server's answer
        without one, so a server that stalls just then would hold the run forever. The transport
        is closed to end that wait."""
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            transport.close()

        timer = threading.Timer(self._connect_timeout, expire)
        timer.daemon = True
        timer.start()
        try:
            channel.exec_command(command)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            if expired.is_set():
                raise CommandStalled(
                    f"the server did not start the command within {self._connect_timeout:.0f} s"
                ) from exc
            raise
        finally:
            timer.cancel()

    def _check_stall(self, heard: float) -> None:
        if self._stall_timeout and time.monotonic() - heard > self._stall_timeout:
            raise CommandStalled(
                f"the remote command sent nothing for {self._stall_timeout:g} s: it, or its "
                "connection, stalled"
            )

    @staticmethod
    def _check(deadline: float, timeout: float, cancel: threading.Event | None) -> None:
        if cancel is not None and cancel.is_set():
            raise CommandCancelled("the run was cancelled")
        if time.monotonic() > deadline:
            raise CommandTimeout(f"the remote command ran longer than {timeout:.0f} s")

    @staticmethod
    def _exit_status(channel: paramiko.Channel) -> int:
        """The command's exit status; an error when the server sent none (paramiko's -1)."""
        status = channel.recv_exit_status()
        if status != _NO_EXIT_STATUS:
            return status
        # A server that ends a session sends EOF first; a connection that dies just goes away.
        transport = channel.get_transport()
        if not channel.eof_received or not transport.is_active():
            raise ExecutorError("the SSH connection closed before the remote command finished")
        raise ExecutorError("the remote command was killed by a signal (no exit status)")

    @staticmethod
    def _drain_stderr(channel: paramiko.Channel, stderr: OutputLines) -> None:
        while True:
            try:
                data = channel.recv_stderr(CHUNK_SIZE)
            except TimeoutError:
                return
            if not data:
                return
            stderr.feed(data)

    def run(self, command: str, *, stdin: bytes = b"", timeout: float = 60.0) -> tuple[int, str]:
        """Run a short command; returns its exit status and whole stdout (text)."""
        chunks: list[bytes] = []
        result = self.stream(command, chunks.append, stdin=stdin, timeout=timeout)
        return result.exit_status, b"".join(chunks).decode("utf-8", errors="replace")
