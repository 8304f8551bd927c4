"""Real OpenSSH, MariaDB and PostgreSQL servers on 127.0.0.1, for tests and benchmarks.

Each `start_*` is a context manager: it starts the server on a free port in its own directory,
waits (bounded) until it answers, yields a description of how to reach it, and stops it and
removes its files on exit. The start commands follow `/work/shared/notes/real-servers.md`.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

HOST = "127.0.0.1"
READY_TIMEOUT = 30.0
PG_BIN = Path("/usr/lib/postgresql/15/bin")
SSHD_LOG = "sshd.log"  # in the server's directory


class ServerStartError(RuntimeError):
    """A server did not come up; the message carries its log."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def wait_until(ready: Callable[[], bool], what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.05)
    detail = log.read_text(errors="replace")[-4000:] if log is not None and log.exists() else ""
    raise ServerStartError(f"{what} not ready after {READY_TIMEOUT:.0f} s\n{detail}")


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@contextmanager
def owned_directory(user: str, prefix: str) -> Iterator[Path]:
    """A fresh directory owned by `user`, reachable by it (pytest's tmp dirs are root-only)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    entry = pwd.getpwnam(user)
    os.chown(path, entry.pw_uid, entry.pw_gid)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@dataclass(frozen=True)
class PasswordLogin:
    """A Linux user that sshd lets in by password (and by a key only once one is written to
    `home/.ssh/authorized_keys`, which sshd reads as that user)."""

    username: str
    password: str = field(repr=False)
    home: Path


@dataclass(frozen=True)
class SshServer:
    host: str
    port: int
    username: str
    private_key: Path
    known_hosts: Path
    host_key_line: str  # "ssh-ed25519 AAAA..." of the server's host key
    directory: Path
    password_login: PasswordLogin | None = None  # None: key login (as root) only

    @property
    def log(self) -> Path:
        """sshd's own log: who authenticated, and how ("Accepted password for ...")."""
        return self.directory / SSHD_LOG

    def ssh_argv(self) -> list[str]:
        """The OpenSSH client command that reaches this server with host key checking on."""
        return [
            "ssh",
            "-p",
            str(self.port),
            "-i",
            str(self.private_key),
            "-o",
            f"UserKnownHostsFile={self.known_hosts}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            f"{self.username}@{self.host}",
        ]


def _keygen(path: Path) -> str:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(path)],
        check=True,
        capture_output=True,
    )
    return " ".join(path.with_suffix(".pub").read_text().split()[:2])


@contextmanager
def password_user() -> Iterator[PasswordLogin]:
    """A fresh Linux user with a random password, deleted (with its home) on exit.

    Its name is new on every start, so parallel test workers never share a user or overwrite each
    other's password. A user left behind by a killed run is named `reconciler-t-*`.
    """
    name = f"reconciler-t-{secrets.token_hex(4)}"
    password = secrets.token_urlsafe(24)
    subprocess.run(["useradd", "-m", "-s", "/bin/sh", name], check=True, capture_output=True)
    try:
        subprocess.run(
            ["chpasswd"], input=f"{name}:{password}\n", text=True, check=True, capture_output=True
        )
        yield PasswordLogin(name, password, Path(pwd.getpwnam(name).pw_dir))
    finally:
        subprocess.run(["userdel", "-f", "-r", name], check=True, capture_output=True)


SHELL_USER_PREFIX = "reconciler-s-"


@dataclass(frozen=True)
class ShellLogin:
    """A Linux user with its own login shell that sshd lets in with the server's user key."""

    username: str
    shell: str  # absolute path of the login shell
    home: Path

    @property
    def authorized_keys(self) -> Path:
        return self.home / ".ssh" / "authorized_keys"

    def authorize(self, server: SshServer, *, forced_command: str | None = None) -> None:
        """Let `server.private_key` in; with `forced_command`, sshd runs that instead of what the
        client asks (an authorized_keys `command=` option; the client's command is then in
        $SSH_ORIGINAL_COMMAND)."""
        key = server.private_key.with_suffix(".pub").read_text().strip()
        if forced_command is not None:
            escaped = forced_command.replace('"', '\\"')  # sshd unescapes only \"
            key = f'command="{escaped}" {key}'
        self.authorized_keys.write_text(key + "\n")


@contextmanager
def shell_user(shell: str) -> Iterator[ShellLogin]:
    """A fresh Linux user whose login shell is `shell` (which must be installed), deleted with its
    home on exit; named `reconciler-s-*`, which the test sshd lets in by key from its home."""
    path = shutil.which(shell)
    if path is None:
        raise ServerStartError(f"{shell} is not installed (scripts/setup installs it)")
    name = f"{SHELL_USER_PREFIX}{secrets.token_hex(4)}"
    # No password ("*"), but not locked ("!"): sshd refuses a locked account even a key login.
    subprocess.run(["useradd", "-m", "-s", path, "-p", "*", name], check=True, capture_output=True)
    try:
        entry = pwd.getpwnam(name)
        home = Path(entry.pw_dir)
        ssh_dir = home / ".ssh"
        ssh_dir.mkdir(mode=0o700)
        (ssh_dir / "authorized_keys").touch(mode=0o600)
        for owned in (ssh_dir, ssh_dir / "authorized_keys"):
            os.chown(owned, entry.pw_uid, entry.pw_gid)
        yield ShellLogin(name, path, home)
    finally:
        subprocess.run(["userdel", "-f", "-r", name], check=True, capture_output=True)


@contextmanager
def start_sshd(directory: Path) -> Iterator[SshServer]:
    """sshd allowing root login with a generated key, and `password_login` by password.

    Password authentication is on for that one user only (a `Match User` block); root stays
    key-only. With `UsePAM no` sshd checks the password against /etc/shadow itself; paramiko uses
    the "password" method, so keyboard-interactive stays off for everyone. The password user has
    no authorized key unless a test writes one to its `home/.ssh/authorized_keys`.
    known_hosts holds the server's real host key.
    """
    directory.mkdir(parents=True, exist_ok=True)
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    host_key = directory / "host_ed25519"
    host_key_line = _keygen(host_key)
    user_key = directory / "id_ed25519"
    user_public = _keygen(user_key)
    (directory / "authorized_keys.root").write_text(user_public + "\n")
    port = free_port()
    known_hosts = directory / "known_hosts"
    known_hosts.write_text(f"[{HOST}]:{port} {host_key_line}\n")
    config = directory / "sshd_config"
    with password_user() as login:
        config.write_text(
            "\n".join(
                [
                    f"Port {port}",
                    f"ListenAddress {HOST}",
                    f"HostKey {host_key}",
                    f"PidFile {directory / 'sshd.pid'}",
                    f"AuthorizedKeysFile {directory}/authorized_keys.%u",
                    "UsePAM no",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PubkeyAuthentication yes",
                    "PermitRootLogin prohibit-password",
                    "StrictModes no",
                    "MaxSessions 50",
                    "MaxStartups 50:30:100",
                    "Subsystem sftp internal-sftp",
                    # Last: everything after a Match line applies to the matched user only. The
                    # test directory is root-only, so these users' keys live in their own homes.
                    f"Match User {SHELL_USER_PREFIX}*",
                    "    AuthorizedKeysFile .ssh/authorized_keys",
                    f"Match User {login.username}",
                    "    PasswordAuthentication yes",
                    "    AuthorizedKeysFile .ssh/authorized_keys",
                    "",
                ]
            )
        )
        subprocess.run(["/usr/sbin/sshd", "-t", "-f", str(config)], check=True, capture_output=True)
        log = directory / SSHD_LOG
        process = subprocess.Popen(["/usr/sbin/sshd", "-f", str(config), "-D", "-E", str(log)])
        try:
            wait_until(lambda: _port_open(port), "sshd", log)
            yield SshServer(
                HOST, port, "root", user_key, known_hosts, host_key_line, directory, login
            )
        finally:
            _stop(process)


@dataclass(frozen=True)
class MariaDbServer:
    host: str
    port: int
    socket: Path
    username: str  # password-authenticated over TCP, all privileges
    password: str

    def sql(self, statement: str, database: str | None = None) -> str:
        """Run SQL as root over the socket; tab-separated rows without headers.

        The SQL goes through stdin: on a command line, a password in it would be visible to every
        process (and the tests that check no process list shows a password would see it)."""
        argv = ["mariadb", f"--socket={self.socket}", "-uroot", "-N", "-B"]
        if database is not None:
            argv.append(database)
        return subprocess.run(
            argv, input=statement, check=True, capture_output=True, text=True
        ).stdout


@contextmanager
def start_mariadb() -> Iterator[MariaDbServer]:
    with owned_directory("mysql", "reconciler-mariadb-") as root:
        data, run = root / "data", root / "run"
        for path in (data, run):
            path.mkdir()
            shutil.chown(path, "mysql", "mysql")
        subprocess.run(
            [
                "mysql_install_db",
                "--user=mysql",
                f"--datadir={data}",
                "--auth-root-authentication-method=socket",
                "--skip-test-db",
            ],
            check=True,
            capture_output=True,
        )
        port = free_port()
        sock = run / "mysql.sock"
        log = run / "mysqld.err"
        process = subprocess.Popen(
            [
                "mariadbd",
                "--no-defaults",
                "--user=mysql",
                f"--datadir={data}",
                f"--socket={sock}",
                f"--port={port}",
                f"--bind-address={HOST}",
                f"--pid-file={run / 'mysqld.pid'}",
                f"--log-error={log}",
                "--skip-name-resolve",
            ]
        )
        try:
            wait_until(
                lambda: (
                    subprocess.run(
                        ["mariadb-admin", f"--socket={sock}", "-uroot", "ping"], capture_output=True
                    ).returncode
                    == 0
                ),
                "MariaDB",
                log,
            )
            server = MariaDbServer(HOST, port, sock, "backup", f"maria-{secrets.token_urlsafe(12)}")
            server.sql(
                f"CREATE USER 'backup'@'{HOST}' IDENTIFIED BY '{server.password}';"
                f"GRANT ALL PRIVILEGES ON *.* TO 'backup'@'{HOST}';"
            )
            yield server
        finally:
            _stop(process)


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    socket_dir: Path
    username: str  # password-authenticated (scram) over TCP, superuser
    password: str

    def sql(self, statement: str, database: str = "postgres") -> str:
        """Run SQL as postgres over the socket (trusted); unaligned rows without headers.

        The SQL goes through stdin, never the command line (see MariaDbServer.sql)."""
        argv = [
            "psql",
            "-h",
            str(self.socket_dir),
            "-p",
            str(self.port),
            "-U",
            "postgres",
            "-d",
            database,
            "-v",
            "ON_ERROR_STOP=1",
            "-At",
        ]
        return subprocess.run(
            argv, input=statement, check=True, capture_output=True, text=True
        ).stdout


@contextmanager
def start_postgres() -> Iterator[PostgresServer]:
    with owned_directory("postgres", "reconciler-postgres-") as root:
        data = root / "data"
        port = free_port()

        def as_postgres(*argv: str) -> None:
            subprocess.run(
                ["runuser", "-u", "postgres", "--", *argv], check=True, capture_output=True
            )

        as_postgres(
            str(PG_BIN / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
        )
        options = f"-p {port} -k {root} -c listen_addresses={HOST} -c fsync=off"
        as_postgres(
            str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(root / "pg.log"), "-o", options,
            "-w", "-t", "30", "start",
        )  # fmt: skip
        try:
            server = PostgresServer(HOST, port, root, "backup", f"pg-{secrets.token_urlsafe(12)}")
            server.sql(f"CREATE ROLE backup LOGIN SUPERUSER PASSWORD '{server.password}'")
            yield server
        finally:
            subprocess.run(
                ["runuser", "-u", "postgres", "--", str(PG_BIN / "pg_ctl"), "-D", str(data),
                 "-m", "immediate", "-w", "-t", "30", "stop"],
                capture_output=True,
            )  # fmt: skip


class BlockedDump:
    """A PostgreSQL dump that waits on a table lock until released: a run that stays running."""

    def __init__(self, postgres: PostgresServer) -> None:
        postgres.sql("DROP DATABASE IF EXISTS slow")
        postgres.sql("CREATE DATABASE slow")
        postgres.sql("CREATE TABLE t (id int); INSERT INTO t VALUES (1)", "slow")
        self.locker = subprocess.Popen(
            ["psql", "-h", str(postgres.socket_dir), "-p", str(postgres.port), "-U", "postgres",
             "-d", "slow", "-q"],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        assert self.locker.stdin is not None
        self.locker.stdin.write("BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE;\n")
        self.locker.stdin.flush()
        deadline = time.monotonic() + 10
        while (
            "t"
            not in postgres.sql(
                "SELECT relname FROM pg_locks JOIN pg_class ON oid = relation WHERE mode = "
                "'AccessExclusiveLock' AND granted",
                "slow",
            ).split()
        ):
            assert time.monotonic() < deadline, "the lock was never taken"
            time.sleep(0.05)

    def release(self) -> None:
        assert self.locker.stdin is not None
        self.locker.stdin.close()
        self.locker.wait(timeout=10)
