"""SSH execution against a real OpenSSH server: host keys, streaming, stdin, stderr, timeouts."""

from __future__ import annotations

import hashlib
import os
import shlex
import signal
import subprocess
import threading
from pathlib import Path

import fabric
import pytest

from reconciler.executor import (
    CHUNK_SIZE,
    CommandCancelled,
    CommandStalled,
    CommandTimeout,
    ExecutorError,
    HostKeyError,
    RemoteShell,
    SshTarget,
)
from tests.servers import SshServer


def target(sshd: SshServer, **overrides: object) -> SshTarget:
    values: dict[str, object] = {
        "host": sshd.host,
        "port": sshd.port,
        "username": sshd.username,
        "private_key": str(sshd.private_key),
        "known_hosts": str(sshd.known_hosts),
    }
    values.update(overrides)
    return SshTarget(**values)  # type: ignore[arg-type]


def test_a_server_whose_key_is_not_in_known_hosts_is_refused(
    sshd: SshServer, tmp_path: Path
) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(HostKeyError, match="not in"):
        RemoteShell(target(sshd, known_hosts=str(empty))).connect()


def test_a_server_whose_key_changed_is_refused_even_when_new_keys_are_accepted(
    sshd: SshServer, tmp_path: Path
) -> None:
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    known = tmp_path / "known_hosts"
    known.write_text(f"[{sshd.host}]:{sshd.port} {other.with_suffix('.pub').read_text()}")
    with pytest.raises(HostKeyError, match="does not match"):
        RemoteShell(target(sshd, known_hosts=str(known), accept_new_host_keys=True)).connect()


def test_accepting_new_host_keys_records_the_key_and_connects(
    sshd: SshServer, tmp_path: Path
) -> None:
    known = tmp_path / "fresh" / "known_hosts"
    with RemoteShell(target(sshd, known_hosts=str(known), accept_new_host_keys=True)) as shell:
        assert shell.run("echo ok") == (0, "ok\n")
    assert sshd.host_key_line.split()[1] in known.read_text()


def test_the_session_is_opened_by_a_fabric_connection(sshd: SshServer) -> None:
    with RemoteShell(target(sshd)) as shell:
        connection = shell.connection
        assert isinstance(connection, fabric.Connection)
        assert connection.is_connected
        assert (
            connection.run("echo via fabric", hide=True, in_stream=False).stdout == "via fabric\n"
        )


def test_ssh_and_fabric_config_files_in_home_do_not_change_the_connection(
    sshd: SshServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    ssh_canary, fabric_canary = tmp_path / "ssh-proxy-ran", tmp_path / "fabric-gateway-ran"
    (home / ".ssh" / "config").write_text(
        f"Host *\n  HostName localhost\n  ProxyCommand touch {ssh_canary}\n"
    )
    (home / ".fabric.yaml").write_text(f"gateway: touch {fabric_canary}\n")
    monkeypatch.setenv("HOME", str(home))
    with RemoteShell(target(sshd)) as shell:
        assert shell.run("echo ok") == (0, "ok\n")
        assert shell.connection.host == sshd.host
    assert not ssh_canary.exists()
    assert not fabric_canary.exists()


def test_stdout_is_streamed_byte_for_byte_in_bounded_chunks(
    sshd: SshServer, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.write_bytes(os.urandom(5 * CHUNK_SIZE + 123))
    digest, sizes = hashlib.sha256(), []

    def sink(chunk: bytes) -> None:
        sizes.append(len(chunk))
        digest.update(chunk)

    with RemoteShell(target(sshd)) as shell:
        result = shell.stream(f"cat {shlex.quote(str(data))}", sink, timeout=60)
    assert result.exit_status == 0
    assert result.stdout_bytes == data.stat().st_size
    assert digest.hexdigest() == hashlib.sha256(data.read_bytes()).hexdigest()
    assert max(sizes) <= CHUNK_SIZE


def test_stdin_reaches_the_command_and_stderr_lines_are_reported(sshd: SshServer) -> None:
    lines: list[str] = []
    with RemoteShell(target(sshd)) as shell:
        out: list[bytes] = []
        result = shell.stream(
            'IFS= read -r x; printf %s "$x"; echo one >&2; echo two >&2; exit 3',
            out.append,
            stdin=b"from stdin\n",
            timeout=30,
            on_stderr_line=lines.append,
        )
    assert b"".join(out) == b"from stdin"
    assert result.exit_status == 3
    assert lines == ["one", "two"]
    assert result.stderr_tail == ("one", "two")


def test_a_command_running_past_its_timeout_is_stopped(sshd: SshServer) -> None:
    with RemoteShell(target(sshd)) as shell, pytest.raises(CommandTimeout):
        shell.stream("sleep 30", lambda chunk: None, timeout=0.5)


def test_a_command_that_sends_nothing_for_the_stall_timeout_has_stalled(sshd: SshServer) -> None:
    with (
        RemoteShell(target(sshd), stall_timeout=0.5) as shell,
        pytest.raises(CommandStalled, match=r"sent nothing for 0\.5 s"),
    ):
        shell.stream("sleep 30", lambda chunk: None, timeout=60)


def test_output_on_stdout_or_stderr_keeps_a_slow_command_from_counting_as_stalled(
    sshd: SshServer,
) -> None:
    # Twice as long as the stall timeout in all, with output 6 times as often: a loaded
    # machine's scheduling gaps (0.35 s was enough to trip 0.25 s against 0.6 s) stay far under it.
    numbers = range(1, 13)
    slow = f"for i in {' '.join(map(str, numbers))}; do sleep 0.25; echo $i; echo $i >&2; done"
    with RemoteShell(target(sshd), stall_timeout=1.5) as shell:
        assert shell.run(slow) == (0, "".join(f"{i}\n" for i in numbers))
        result = shell.stream(f"{{ {slow}; }} >/dev/null", lambda chunk: None, timeout=60)
    assert result.exit_status == 0


def test_a_cancelled_command_stops_promptly(sshd: SshServer) -> None:
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    with RemoteShell(target(sshd)) as shell, pytest.raises(CommandCancelled):
        shell.stream("sleep 30", lambda chunk: None, timeout=60, cancel=cancel)


def test_the_transport_prefers_aes_gcm(sshd: SshServer) -> None:
    with RemoteShell(target(sshd)) as shell:
        assert shell.cipher() == "aes128-gcm@openssh.com"


def test_a_target_never_shows_its_password() -> None:
    assert "hunter2" not in repr(SshTarget("127.0.0.1", 22, "u", password="hunter2"))


def test_a_session_killed_mid_stream_is_reported_as_a_closed_connection(sshd: SshServer) -> None:
    killed: list[int] = []

    def kill_the_session_on_first_output(chunk: bytes) -> None:
        if not killed:  # the command's first line is its parent: the session's sshd process
            killed.append(int(chunk.split()[0]))
            os.kill(killed[0], signal.SIGKILL)

    with RemoteShell(target(sshd)) as shell, pytest.raises(ExecutorError) as failed:
        shell.stream(
            "echo $PPID; while :; do echo more; sleep 0.05; done",
            kill_the_session_on_first_output,
            timeout=30,
        )
    assert killed
    assert str(failed.value) == "the SSH connection closed before the remote command finished"


def test_a_remote_command_killed_by_a_signal_is_reported_as_such(sshd: SshServer) -> None:
    with RemoteShell(target(sshd)) as shell, pytest.raises(ExecutorError) as failed:
        shell.stream("echo started; kill -9 $$", lambda chunk: None, timeout=30)
    assert str(failed.value) == "the remote command was killed by a signal (no exit status)"
