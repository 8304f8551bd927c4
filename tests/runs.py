"""Building resolved tasks that point at the test servers, and a runner around them."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from reconciler.backup import BackupPipeline
from reconciler.models import (
    BackupTask,
    DatabaseConnection,
    DatabaseEngine,
    Frequency,
    LocalDestination,
    RemoteServer,
    ResolvedTask,
    Schedule,
    SecretRef,
    SftpDestination,
    Source,
    SourceType,
    User,
)
from reconciler.runner import Runner
from reconciler.secrets import Secrets
from reconciler.state.sqlite import SqliteStateStore
from reconciler.types import Clock, RunStatus
from tests import configset
from tests.clock import FakeClock
from tests.servers import PostgresServer, SshServer

T0 = datetime(2024, 5, 1, 3, 0, 0, tzinfo=UTC)
ENCRYPTION_PASSWORD = "restore me, 7d1e"


def make_task(
    sshd: SshServer,
    destination: Path,
    source: Source,
    *,
    task_id: int = 1,
    server_id: int = 1,
    database: DatabaseConnection | None = None,
    **task_fields: Any,
) -> ResolvedTask:
    server = RemoteServer(
        id=server_id,
        user_id=1,
        label="loopback",
        host=sshd.host,
        port=sshd.port,
        username=sshd.username,
        private_key=str(sshd.private_key),
        known_hosts=str(sshd.known_hosts),
        database=database,
    )
    task = BackupTask(
        id=task_id,
        user_id=1,
        label=f"task {task_id}",
        remote_server_id=server_id,
        backup_destination_id=1,
        source=source,
        schedule=Schedule(frequency=Frequency.DAILY, time="03:00"),
        **task_fields,
    )
    return ResolvedTask(
        task=task,
        owner=User(id=1, name="Owner", email="owner@example.com"),
        server=server,
        destination=LocalDestination(
            id=1, user_id=1, label="disk", type="local", path=str(destination)
        ),
    )


def files_task(sshd: SshServer, destination: Path, path: Path, **fields: Any) -> ResolvedTask:
    return make_task(sshd, destination, Source(type=SourceType.FILES, path=str(path)), **fields)


def database_connection(engine: DatabaseEngine, port: int, username: str) -> DatabaseConnection:
    return DatabaseConnection(
        engine=engine,
        host="127.0.0.1",
        port=port,
        username=username,
        password=SecretRef(env="DB_PASSWORD"),
    )


class Harness:
    """A runner on fresh state in `tmp_path`, with secrets from a fixed environment."""

    def __init__(self, tmp_path: Path, environ: dict[str, str] | None = None) -> None:
        self.clock = FakeClock(T0)
        self.state = SqliteStateStore(tmp_path / "history.sqlite")
        self.secrets = Secrets(
            tmp_path / "secrets.json",
            {"ENCRYPTION": ENCRYPTION_PASSWORD, **(environ or {})},
        )
        self.runner = self.new_runner()

    def new_runner(
        self,
        *,
        clock: Clock | None = None,
        max_workers: int = 2,
        in_force: Callable[[int], ResolvedTask | None] | None = None,
        **pipeline: Any,
    ) -> Runner:
        """A runner on this state; `pipeline`: options of its `BackupPipeline`."""
        clock = self.clock if clock is None else clock
        backup = BackupPipeline(runs=self.state.runs, secrets=self.secrets, clock=clock, **pipeline)
        return Runner(
            backup, runs=self.state.runs, clock=clock, max_workers=max_workers, in_force=in_force
        )

    def run(self, task: ResolvedTask) -> RunStatus:
        """One manual run to completion; returns its final status."""
        assert self.runner.request_run(task).value == "accepted"
        self.runner.wait(task.id, timeout=120)
        record = self.state.runs.latest_run(task.id)
        assert record is not None
        return record.status


def sftp_destination(
    sshd: SshServer, path: Path, known_hosts: Path | None, accept_new: bool = False
) -> SftpDestination:
    """An SFTP destination on the test sshd; `known_hosts` None leaves the field unset."""
    return SftpDestination(
        id=3,
        user_id=1,
        label="other host",
        type="sftp",
        host=sshd.host,
        port=sshd.port,
        username=sshd.username,
        private_key=str(sshd.private_key),
        known_hosts=str(known_hosts) if known_hosts is not None else None,
        accept_new_host_keys=accept_new,
        path=str(path),
    )


def server_file(sshd: SshServer, **fields: Any) -> str:
    """servers/one.yaml: server 1 of user 1, reached on the test sshd with its key."""
    return configset.server(
        1, 1, host=sshd.host, port=sshd.port, username=sshd.username,
        private_key=str(sshd.private_key), known_hosts=str(sshd.known_hosts), **fields,
    )  # fmt: skip


def postgres_database(postgres: PostgresServer) -> dict[str, Any]:
    """A server's `database` block for the test PostgreSQL, its password from PG_PASSWORD."""
    return {
        "engine": "postgresql",
        "host": postgres.host,
        "port": postgres.port,
        "username": postgres.username,
        "password": {"env": "PG_PASSWORD"},
    }


def impostor_known_hosts(sshd: SshServer, tmp_path: Path) -> Path:
    """known_hosts naming the test server with another key, as after a reinstall or an attack."""
    impostor = tmp_path / "impostor"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(impostor)],
        check=True,
        capture_output=True,
    )
    key_type, key = impostor.with_suffix(".pub").read_text().split()[:2]
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[{sshd.host}]:{sshd.port} {key_type} {key}\n")
    return known_hosts
