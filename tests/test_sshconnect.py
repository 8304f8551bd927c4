"""One SSH policy for servers (executor) and SFTP destinations, against a real OpenSSH server."""

from __future__ import annotations

import dataclasses
import fcntl
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import ValidationError

from reconciler.destinations import DestinationError, open_destination
from reconciler.executor import HostKeyError, RemoteShell, SshTarget
from reconciler.models import RemoteServer, SecretRef, SftpDestination
from reconciler.types import RunStatus
from tests.runs import Harness, files_task, impostor_known_hosts, sftp_destination
from tests.servers import SshServer

CONCURRENT_CONNECTIONS = 6


def no_secrets(ref: SecretRef) -> str:
    raise AssertionError(f"no secret expected, asked for {ref}")


def unrelated_lines(sshd: SshServer) -> str:
    """Lines an operator may already have: none of them is about the test server."""
    key = sshd.host_key_line
    return f"# kept by hand: do not lose this comment\nother.example.com {key}\n"


def server_target(sshd: SshServer, known_hosts: Path | None, accept_new: bool) -> SshTarget:
    return SshTarget(
        sshd.host,
        sshd.port,
        sshd.username,
        private_key=str(sshd.private_key),
        known_hosts=str(known_hosts) if known_hosts is not None else None,
        accept_new_host_keys=accept_new,
    )


def connect_server(sshd: SshServer, known_hosts: Path) -> None:
    with RemoteShell(server_target(sshd, known_hosts, accept_new=True)) as shell:
        assert shell.run("true") == (0, "")


def all_at_once(connect: Callable[[], None]) -> list[BaseException]:
    """Run `connect` in several threads released together; returns what they raised."""
    start = threading.Barrier(CONCURRENT_CONNECTIONS)
    failures: list[BaseException] = []

    def one() -> None:
        start.wait()
        try:
            connect()
        except BaseException as exc:  # reported by the test, not lost in a thread
            failures.append(exc)

    threads = [threading.Thread(target=one) for _ in range(CONCURRENT_CONNECTIONS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return failures


def test_concurrent_first_connections_to_a_server_remember_its_key_once_and_keep_other_lines(
    sshd: SshServer, tmp_path: Path
) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(unrelated_lines(sshd))

    assert all_at_once(lambda: connect_server(sshd, known_hosts)) == []
    assert known_hosts.read_text() == (
        unrelated_lines(sshd) + f"[{sshd.host}]:{sshd.port} {sshd.host_key_line}\n"
    )


def test_concurrent_first_sftp_connections_remember_the_key_once_and_keep_other_lines(
    sshd: SshServer, tmp_path: Path
) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(unrelated_lines(sshd))
    destination = sftp_destination(sshd, tmp_path / "remote", known_hosts, accept_new=True)

    assert all_at_once(lambda: open_destination(destination, no_secrets).close()) == []
    assert known_hosts.read_text() == (
        unrelated_lines(sshd) + f"[{sshd.host}]:{sshd.port} {sshd.host_key_line}\n"
    )


def test_a_first_connection_waits_for_another_daemons_append_and_does_not_repeat_it(
    sshd: SshServer, tmp_path: Path
) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(unrelated_lines(sshd))
    host_line = f"[{sshd.host}]:{sshd.port} {sshd.host_key_line}\n"
    failures: list[BaseException] = []
    with known_hosts.open("a") as other_daemon:
        fcntl.flock(other_daemon, fcntl.LOCK_EX)
        connecting = threading.Thread(
            target=lambda: failures.extend(connect_server_reporting(sshd, known_hosts))
        )
        connecting.start()
        connecting.join(timeout=2.0)
        assert connecting.is_alive(), "the connection did not wait for the file lock"
        other_daemon.write(host_line)
        other_daemon.flush()
        fcntl.flock(other_daemon, fcntl.LOCK_UN)
    connecting.join()
    assert failures == []
    assert known_hosts.read_text() == unrelated_lines(sshd) + host_line


def test_a_first_connection_refuses_a_different_key_another_daemon_recorded_meanwhile(
    sshd: SshServer, tmp_path: Path
) -> None:
    (tmp_path / "elsewhere").mkdir()
    impostor_line = impostor_known_hosts(sshd, tmp_path / "elsewhere").read_text()
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(unrelated_lines(sshd))
    failures: list[BaseException] = []
    with known_hosts.open("a") as other_daemon:
        fcntl.flock(other_daemon, fcntl.LOCK_EX)
        connecting = threading.Thread(
            target=lambda: failures.extend(connect_server_reporting(sshd, known_hosts))
        )
        connecting.start()
        connecting.join(timeout=2.0)
        other_daemon.write(impostor_line)
        other_daemon.flush()
        fcntl.flock(other_daemon, fcntl.LOCK_UN)
    connecting.join()
    assert len(failures) == 1
    assert isinstance(failures[0], HostKeyError)
    assert "does not match" in str(failures[0])
    assert known_hosts.read_text() == unrelated_lines(sshd) + impostor_line


def connect_server_reporting(sshd: SshServer, known_hosts: Path) -> list[BaseException]:
    try:
        connect_server(sshd, known_hosts)
    except BaseException as exc:  # reported by the test, not lost in a thread
        return [exc]
    return []


def test_a_key_remembered_for_a_server_is_trusted_by_an_sftp_destination(
    sshd: SshServer, tmp_path: Path
) -> None:
    known_hosts = tmp_path / "known_hosts"
    connect_server(sshd, known_hosts)
    refusing_new = sftp_destination(sshd, tmp_path / "remote", known_hosts, accept_new=False)
    open_destination(refusing_new, no_secrets).close()
    assert known_hosts.read_text().count(sshd.host_key_line) == 1


def test_a_key_appended_to_a_file_without_a_final_newline_keeps_the_last_line_whole(
    sshd: SshServer, tmp_path: Path
) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(unrelated_lines(sshd).rstrip("\n"))
    connect_server(sshd, known_hosts)
    assert known_hosts.read_text() == (
        unrelated_lines(sshd) + f"[{sshd.host}]:{sshd.port} {sshd.host_key_line}\n"
    )


def test_known_hosts_with_openssh_marker_lines_is_read_and_the_lines_are_kept(
    sshd: SshServer, tmp_path: Path
) -> None:
    markers = f"@cert-authority *.example.com {sshd.host_key_line}\n"
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(markers)
    connect_server(sshd, known_hosts)
    refusing_new = sftp_destination(sshd, tmp_path / "remote", known_hosts, accept_new=False)
    open_destination(refusing_new, no_secrets).close()
    assert known_hosts.read_text() == (
        markers + f"[{sshd.host}]:{sshd.port} {sshd.host_key_line}\n"
    )


def test_an_sftp_destination_without_known_hosts_uses_the_daemons_known_hosts(
    sshd: SshServer, tmp_path: Path
) -> None:
    destination = sftp_destination(sshd, tmp_path / "remote", known_hosts=None)
    open_destination(destination, no_secrets, known_hosts=sshd.known_hosts).close()


def test_an_sftp_destination_is_refused_when_the_daemons_known_hosts_lacks_its_host(
    sshd: SshServer, tmp_path: Path
) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    destination = sftp_destination(sshd, tmp_path / "remote", known_hosts=None)
    with pytest.raises(DestinationError, match=f"not in {empty}"):
        open_destination(destination, no_secrets, known_hosts=empty)


def test_an_sftp_destination_own_known_hosts_wins_over_the_daemons(
    sshd: SshServer, tmp_path: Path
) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    destination = sftp_destination(sshd, tmp_path / "remote", known_hosts=sshd.known_hosts)
    open_destination(destination, no_secrets, known_hosts=empty).close()


def test_a_run_uses_the_daemons_known_hosts_for_its_server_and_its_sftp_destination(
    sshd: SshServer, tmp_path: Path
) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "a.txt").write_text("a")
    task = files_task(sshd, tmp_path / "unused", source)
    remote = tmp_path / "remote"
    task = task.model_copy(
        update={
            "server": task.server.model_copy(update={"known_hosts": None}),
            "destination": sftp_destination(sshd, remote, known_hosts=None),
        }
    )
    harness = Harness(tmp_path)
    harness.runner = harness.new_runner(known_hosts=sshd.known_hosts)
    assert harness.run(task) == RunStatus.SUCCESSFUL
    assert len(list((remote / task.task.storage.path.strip("/")).iterdir())) == 1


def test_a_changed_host_key_is_refused_for_a_server_and_the_file_is_left_alone(
    sshd: SshServer, tmp_path: Path
) -> None:
    known_hosts = impostor_known_hosts(sshd, tmp_path)
    before = known_hosts.read_text()
    with pytest.raises(HostKeyError, match="does not match"):
        RemoteShell(server_target(sshd, known_hosts, accept_new=True)).connect()
    assert known_hosts.read_text() == before


def test_a_changed_host_key_is_refused_for_an_sftp_destination_and_the_file_is_left_alone(
    sshd: SshServer, tmp_path: Path
) -> None:
    known_hosts = impostor_known_hosts(sshd, tmp_path)
    before = known_hosts.read_text()
    destination = sftp_destination(sshd, tmp_path / "remote", known_hosts, accept_new=True)
    with pytest.raises(DestinationError, match="does not match"):
        open_destination(destination, no_secrets)
    assert known_hosts.read_text() == before


def test_an_sftp_destination_without_private_key_does_not_try_the_daemon_users_keys(
    sshd: SshServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    for name in ("id_ed25519", "id_rsa"):
        shutil.copy(sshd.private_key, home / ".ssh" / name)
        (home / ".ssh" / name).chmod(0o600)
    monkeypatch.setenv("HOME", str(home))
    destination = sftp_destination(sshd, tmp_path / "remote", sshd.known_hosts).model_copy(
        update={"private_key": None}
    )
    with pytest.raises(DestinationError, match=r"[Aa]uthentication"):
        open_destination(destination, no_secrets)


def test_a_private_key_under_tilde_is_read_from_the_home_of_the_daemons_user(
    sshd: SshServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    shutil.copy(sshd.private_key, home / ".ssh" / "backup_key")
    (home / ".ssh" / "backup_key").chmod(0o600)
    monkeypatch.setenv("HOME", str(home))
    target = server_target(sshd, sshd.known_hosts, accept_new=False)
    with RemoteShell(dataclasses.replace(target, private_key="~/.ssh/backup_key")) as shell:
        assert shell.run("true") == (0, "")


@pytest.mark.parametrize("model", [RemoteServer, SftpDestination])
def test_a_relative_key_path_is_refused_for_servers_and_sftp_destinations_alike(
    model: type[RemoteServer] | type[SftpDestination],
) -> None:
    fields = {"id": 1, "user_id": 1, "label": "x", "host": "backup.example.com"}
    if model is SftpDestination:
        fields |= {"type": "sftp", "path": "/srv/backups"}
    with pytest.raises(ValidationError, match="absolute path on the backup host or start with ~"):
        model.model_validate({**fields, "private_key": ".ssh/id_ed25519"})
    assert model.model_validate({**fields, "private_key": "~/.ssh/id_ed25519"}).private_key == (
        "~/.ssh/id_ed25519"
    )
