"""Per-task isolated credentials against a real OpenSSH server: the run logs in as the task's own
user by password, never with the server's user and key.

The sshd fixture has a password-login user (`sshd.password_login`) besides root. Root can read
every file, so what the backup contains cannot tell who made it; sshd's own log can: it writes
"Accepted <method> for <user>" for every login it lets in.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.executor import RemoteShell, SshTarget
from reconciler.models import ResolvedTask, SecretRef
from reconciler.restore import restore
from reconciler.state.runs import RunRecord
from reconciler.types import RunStatus
from tests.runs import Harness, files_task
from tests.servers import PasswordLogin, SshServer, owned_directory

PASSWORD_VARIABLE = "ISOLATED_PASSWORD"


def give_to(login: PasswordLogin, *paths: Path) -> None:
    entry = pwd.getpwnam(login.username)
    for path in paths:
        os.chown(path, entry.pw_uid, entry.pw_gid)


@pytest.fixture
def login(sshd: SshServer) -> PasswordLogin:
    assert sshd.password_login is not None
    return sshd.password_login


@pytest.fixture
def private_source(login: PasswordLogin) -> Iterator[Path]:
    """A directory (mode 0700) and file (0600) owned by the isolated user."""
    with owned_directory(login.username, "reconciler-isolated-") as directory:
        secret_file = directory / "notes.txt"
        secret_file.write_text("only mine\n")
        secret_file.chmod(0o600)
        give_to(login, secret_file)
        assert directory.stat().st_mode & 0o777 == 0o700
        yield directory


@pytest.fixture
def server_key_authorized(login: PasswordLogin, sshd: SshServer) -> Iterator[None]:
    """The isolated user also accepts the server's (root's) key, for the length of one test."""
    ssh_dir = login.home / ".ssh"
    ssh_dir.mkdir(mode=0o700)
    keys = ssh_dir / "authorized_keys"
    keys.write_text(sshd.private_key.with_suffix(".pub").read_text())
    give_to(login, ssh_dir, keys)
    try:
        yield
    finally:
        shutil.rmtree(ssh_dir)


def isolated_task(
    sshd: SshServer, login: PasswordLogin, tmp_path: Path, source: Path
) -> ResolvedTask:
    return files_task(
        sshd,
        tmp_path / "dest",
        source,
        isolated_username=login.username,
        isolated_password=SecretRef(env=PASSWORD_VARIABLE),
    )


def accepted(sshd: SshServer, method: str, username: str) -> int:
    """How many logins sshd has let in so far by `method` for `username`."""
    return sshd.log.read_text(errors="replace").count(f"Accepted {method} for {username} from ")


def finished_run(harness: Harness, task: ResolvedTask) -> RunRecord:
    harness.run(task)
    record = harness.state.runs.latest_run(task.id)
    assert record is not None
    return record


def test_isolated_credentials_log_in_as_that_user_by_password_and_back_up(
    sshd: SshServer, login: PasswordLogin, private_source: Path, tmp_path: Path
) -> None:
    """The run succeeds, sshd records exactly one password login of the isolated user (the
    user has no authorized key, and root is key-only, so no other way in exists), and the backup
    restores the user's private directory."""
    task = isolated_task(sshd, login, tmp_path, private_source)
    harness = Harness(tmp_path, {PASSWORD_VARIABLE: login.password})
    before = accepted(sshd, "password", login.username)

    record = finished_run(harness, task)

    assert record.status is RunStatus.SUCCESSFUL, record.reason
    assert accepted(sshd, "password", login.username) == before + 1
    assert f"connecting to {login.username}@{sshd.host}:{sshd.port}" in record.output
    restored = restore(task, run=record, to=tmp_path / "restored", secrets=harness.secrets)
    assert (restored / "notes.txt").read_text() == "only mine\n"


def test_a_wrong_isolated_password_fails_the_run_with_a_reason_that_never_shows_it(
    sshd: SshServer, login: PasswordLogin, private_source: Path, tmp_path: Path
) -> None:
    wrong = f"wrong-{secrets.token_urlsafe(16)}"
    task = isolated_task(sshd, login, tmp_path, private_source)
    harness = Harness(tmp_path, {PASSWORD_VARIABLE: wrong})

    record = finished_run(harness, task)

    assert record.status is RunStatus.FAILED
    assert record.reason is not None
    assert f"cannot connect to {login.username}@{sshd.host}:{sshd.port}" in record.reason
    assert "Authentication failed" in record.reason
    assert record.backup_name is None
    for password in (wrong, login.password):
        assert password not in record.reason
        assert password not in record.output


def test_the_servers_key_is_never_offered_with_isolated_credentials(
    sshd: SshServer,
    login: PasswordLogin,
    private_source: Path,
    tmp_path: Path,
    server_key_authorized: None,
) -> None:
    """The isolated user accepts the server's key here, so a run with a wrong password could
    only fail if that key was never offered (paramiko tries a given key before the password)."""
    with_key = SshTarget(
        sshd.host,
        sshd.port,
        login.username,
        private_key=str(sshd.private_key),
        known_hosts=str(sshd.known_hosts),
    )
    with RemoteShell(with_key) as shell:
        assert shell.run("id -un") == (0, f"{login.username}\n")
    task = isolated_task(sshd, login, tmp_path, private_source)
    harness = Harness(tmp_path, {PASSWORD_VARIABLE: f"wrong-{secrets.token_urlsafe(16)}"})
    before = accepted(sshd, "publickey", login.username)

    record = finished_run(harness, task)

    assert record.status is RunStatus.FAILED
    assert accepted(sshd, "publickey", login.username) == before
