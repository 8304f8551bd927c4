"""Backups against real faults: a remote that accepts TCP and never speaks SSH, a remote tar
stopped mid-stream, a connection that stops carrying data mid-stream, a changed host key, and a
destination disk that fills up. Each fails the run with a clear reason, within its documented
timeout, with nothing partial and nothing under a final name left behind, and the older backups
intact.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from reconciler.executor import CommandStalled, RemoteShell, SshTarget
from reconciler.models import Compression, ResolvedTask, SecretRef, Storage
from reconciler.retention import backup_name
from reconciler.runner import Admission, Runner
from reconciler.types import RunStatus
from tests.runs import T0, Harness, files_task
from tests.servers import HOST, SshServer

CONNECT_TIMEOUT = 1.0
STALL_TIMEOUT = 1.5
# Allowed beyond a timeout for the run to wind down (closing the connection, removing the partial).
SLACK = 4.0
OLDER_CONTENT = b"an older backup that must survive"


def older_backups(dest: Path, extension: str = "tar.zst") -> dict[str, bytes]:
    dest.mkdir(parents=True, exist_ok=True)
    older = {
        backup_name(1, None, T0 - timedelta(days=days), extension): OLDER_CONTENT + bytes([days])
        for days in (1, 2)
    }
    for name, content in older.items():
        (dest / name).write_bytes(content)
    return older


def assert_only(dest: Path, older: dict[str, bytes]) -> None:
    """`dest` holds exactly the older backups, byte for byte: no partial, no new final name."""
    assert sorted(path.name for path in dest.iterdir()) == sorted(older)
    for name, content in older.items():
        assert (dest / name).read_bytes() == content


def quick_runner(harness: Harness) -> Runner:
    return harness.new_runner(connect_timeout=CONNECT_TIMEOUT, stall_timeout=STALL_TIMEOUT)


def failed_run(harness: Harness, task: ResolvedTask) -> tuple[str, float]:
    """Run `task` to its end; its failure reason and how long it took."""
    started = time.monotonic()
    status = harness.run(task)
    elapsed = time.monotonic() - started
    record = harness.state.runs.latest_run(task.id)
    assert record is not None
    assert status is RunStatus.FAILED, record.output
    assert record.backup_name is None
    return record.reason or "", elapsed


def source_with(tmp_path: Path, **files: int) -> Path:
    source = tmp_path / "src"
    source.mkdir()
    for name, size in files.items():
        (source / name).write_bytes(os.urandom(size))
    return source


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts TCP connections (the kernel completes them) and never sends a byte."""
    with socket.socket() as listener:
        listener.bind((HOST, 0))
        listener.listen(8)
        yield listener.getsockname()[1]


def test_a_remote_that_accepts_tcp_and_never_speaks_ssh_fails_within_the_connect_timeout(
    sshd: SshServer, silent_port: int, tmp_path: Path
) -> None:
    dest = tmp_path / "dest"
    older = older_backups(dest)
    task = files_task(replace(sshd, port=silent_port), dest, source_with(tmp_path, a=10))
    harness = Harness(tmp_path)
    harness.runner = quick_runner(harness)

    reason, elapsed = failed_run(harness, task)

    assert f"cannot connect to root@{HOST}:{silent_port}" in reason
    assert f"did not complete the SSH handshake within {CONNECT_TIMEOUT:g} s" in reason
    assert elapsed < CONNECT_TIMEOUT + SLACK
    assert_only(dest, older)


def processes_matching(marker: bytes) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if marker in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
    return found


def wait_for_tar_of(source: Path) -> int:
    marker = b"tar\x00--no-unquote\x00-C\x00" + str(source.parent).encode() + b"\x00"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if found := processes_matching(marker):
            return found[0]
        time.sleep(0.005)
    raise AssertionError(f"no tar of {source} appeared")


def test_a_remote_tar_stopped_mid_stream_fails_within_the_stall_timeout(
    sshd: SshServer, tmp_path: Path
) -> None:
    """SIGSTOP the remote tar while it streams a large (sparse, so cheap) file: the channel stays
    open and silent, which only the stall timeout ends (the run timeout is hours)."""
    dest = tmp_path / "dest"
    older = older_backups(dest)
    source = tmp_path / "src"
    source.mkdir()
    with open(source / "huge-sparse", "wb") as huge:
        huge.truncate(64 << 30)  # tar reads 64 GiB of zeros: far longer than this test
    task = files_task(sshd, dest, source)
    harness = Harness(tmp_path)
    harness.runner = quick_runner(harness)

    assert harness.runner.request_run(task) is Admission.ACCEPTED
    tar = wait_for_tar_of(source)
    time.sleep(0.2)  # let some of the stream through first
    os.kill(tar, signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        harness.runner.wait(task.id, timeout=STALL_TIMEOUT + 30)
        elapsed = time.monotonic() - stopped
    finally:
        os.kill(tar, signal.SIGKILL)  # ends a stopped process too

    record = harness.state.runs.latest_run(task.id)
    assert record is not None
    assert record.status is RunStatus.FAILED
    assert record.reason == (
        f"the remote command sent nothing for {STALL_TIMEOUT:g} s: it, or its connection, stalled"
    )
    assert elapsed < STALL_TIMEOUT + SLACK
    assert_only(dest, older)


class StallingProxy:
    """A TCP proxy to `upstream` that passes `limit` bytes from the server (None: until `stalled`
    is set), then stops carrying anything in either direction while keeping both connections
    open: a network that goes silent mid-stream."""

    def __init__(self, upstream: int, limit: int | None) -> None:
        self._upstream = upstream
        self._limit = limit
        self._listener = socket.socket()
        self._listener.bind((HOST, 0))
        self._listener.listen(1)
        self.port: int = self._listener.getsockname()[1]
        self.stalled = threading.Event()
        self._sockets: list[socket.socket] = [self._listener]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            client, _ = self._listener.accept()
            server = socket.create_connection((HOST, self._upstream))
            self._sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server, None), daemon=True).start()
            self._pump(server, client, self._limit)

    def _pump(self, source: socket.socket, target: socket.socket, limit: int | None) -> None:
        passed = 0
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if self.stalled.is_set():
                    return
                if limit is not None and passed + len(data) >= limit:
                    target.sendall(data[: limit - passed])
                    self.stalled.set()
                    return
                passed += len(data)
                target.sendall(data)

    def close(self) -> None:
        for sock in self._sockets:
            sock.close()


def test_a_connection_that_stops_carrying_data_mid_stream_fails_within_the_stall_timeout(
    sshd: SshServer, tmp_path: Path
) -> None:
    dest = tmp_path / "dest"
    older = older_backups(dest, "tar")
    proxy = StallingProxy(sshd.port, limit=2 << 20)
    known_hosts = tmp_path / "known_hosts"  # the same host key, seen through the proxy's port
    known_hosts.write_text(f"[{HOST}]:{proxy.port} {sshd.host_key_line}\n")
    task = files_task(
        replace(sshd, port=proxy.port, known_hosts=known_hosts),
        dest,
        source_with(tmp_path, big=16 << 20),
        storage=Storage(compression=Compression.NONE),
    )
    harness = Harness(tmp_path)
    harness.runner = quick_runner(harness)
    try:
        reason, _ = failed_run(harness, task)
    finally:
        proxy.close()

    assert proxy.stalled.is_set()
    assert f"sent nothing for {STALL_TIMEOUT:g} s" in reason
    assert_only(dest, older)


def test_a_connection_that_goes_silent_before_the_command_starts_fails_within_the_connect_timeout(
    sshd: SshServer, tmp_path: Path
) -> None:
    proxy = StallingProxy(sshd.port, limit=None)
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[{HOST}]:{proxy.port} {sshd.host_key_line}\n")
    target = SshTarget(
        HOST,
        proxy.port,
        sshd.username,
        private_key=str(sshd.private_key),
        known_hosts=str(known_hosts),
    )
    try:
        with RemoteShell(target, connect_timeout=CONNECT_TIMEOUT, stall_timeout=60) as shell:
            proxy.stalled.set()
            started = time.monotonic()
            with pytest.raises(CommandStalled, match="could not open a session on the server"):
                shell.stream("echo never", lambda chunk: None, timeout=60)
            assert time.monotonic() - started < CONNECT_TIMEOUT + SLACK
    finally:
        proxy.close()


def test_a_changed_host_key_is_refused_before_anything_runs(
    sshd: SshServer, tmp_path: Path
) -> None:
    other = tmp_path / "other_host_key"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)],
        check=True,
        capture_output=True,
    )
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[{HOST}]:{sshd.port} {other.with_suffix('.pub').read_text()}")
    dest = tmp_path / "dest"
    older = older_backups(dest)
    task = files_task(replace(sshd, known_hosts=known_hosts), dest, source_with(tmp_path, a=10))
    harness = Harness(tmp_path)

    reason, _ = failed_run(harness, task)

    assert reason == (
        f"host key of root@{HOST}:{sshd.port} does not match {known_hosts}: refusing to connect "
        "(if the server was reinstalled, remove its old line from that file)"
    )
    assert_only(dest, older)


@pytest.fixture
def small_disk() -> Iterator[Path]:
    """A 4 MiB tmpfs mounted for one test (as root), unmounted and removed after."""
    mount_point = Path(tempfile.mkdtemp(prefix="reconciler-small-disk-", dir="/tmp"))
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(mount_point)],
        check=True,
        capture_output=True,
    )
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True, capture_output=True)
        mount_point.rmdir()


@pytest.mark.parametrize("encrypted", [False, True])
def test_a_full_destination_disk_fails_the_run_and_leaves_the_older_backups(
    sshd: SshServer, small_disk: Path, tmp_path: Path, encrypted: bool
) -> None:
    extension = "tar.zst.gpg" if encrypted else "tar.zst"
    older = older_backups(small_disk, extension)
    extra = {"encryption_password": SecretRef(env="ENCRYPTION")} if encrypted else {}
    task = files_task(
        sshd,
        small_disk,
        source_with(tmp_path, incompressible=8 << 20),
        storage=Storage(max_backups=2),
        **extra,
    )
    harness = Harness(tmp_path)

    reason, _ = failed_run(harness, task)

    assert "No space left on device" in reason
    assert_only(small_disk, older)
    assert os.statvfs(small_disk).f_bfree * os.statvfs(small_disk).f_frsize > 3 << 20
