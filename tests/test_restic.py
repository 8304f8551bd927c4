"""The restic destination, with the real restic binary and runs over the real test sshd."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import pytest

from reconciler.destinations import open_destination
from reconciler.destinations.restic import ResticError, ResticStore, check_restic_version
from reconciler.models import (
    DatabaseEngine,
    ResolvedTask,
    ResticDestination,
    SecretRef,
    Source,
    SourceType,
)
from reconciler.resticcommands import ResticProblem, describe_message
from reconciler.restore import restore
from reconciler.types import RunStatus
from reconciler.verify import verify
from tests.clock import TickingClock
from tests.runs import T0, Harness, database_connection, files_task, make_task
from tests.servers import MariaDbServer, PostgresServer, SshServer
from tests.trees import same_tree

PASSWORD = "restic-test-password"


def restic_destination(repository: Path, *, create: bool = True) -> ResticDestination:
    return ResticDestination(
        id=1,
        user_id=1,
        label="vault",
        type="restic",
        repository=str(repository),
        password=SecretRef(env="RESTIC_PW"),
        create=create,
    )


def on_restic(task: ResolvedTask, repository: Path, *, create: bool = True) -> ResolvedTask:
    return task.model_copy(update={"destination": restic_destination(repository, create=create)})


def restic(repository: Path, *args: str, password: str = PASSWORD) -> bytes:
    env = {**os.environ, "RESTIC_REPOSITORY": str(repository), "RESTIC_PASSWORD": password}
    return subprocess.run(["restic", *args], env=env, check=True, capture_output=True).stdout


def make_tree(root: Path, size: int = 2_000_000) -> Path:
    source = root / "site"
    (source / "nested").mkdir(parents=True)
    (source / "random.bin").write_bytes(os.urandom(size))
    (source / "nested" / "text.txt").write_text("line\n" * 10_000)
    return source


def harness(tmp_path: Path, **environ: str) -> Harness:
    return Harness(tmp_path, {"RESTIC_PW": PASSWORD, **environ})


def test_the_installed_restic_is_new_enough() -> None:
    assert check_restic_version().startswith("restic 0.")


def test_a_files_backup_round_trips_through_a_new_repository(
    sshd: SshServer, tmp_path: Path
) -> None:
    source = make_tree(tmp_path)
    task = on_restic(files_task(sshd, tmp_path / "unused", source), tmp_path / "repo")
    rig = harness(tmp_path)
    assert rig.run(task) is RunStatus.SUCCESSFUL
    record = rig.state.runs.latest_run(task.id)
    assert record is not None
    assert record.backup_name is not None
    assert record.backup_name.endswith(".tar")  # stored uncompressed: restic compresses itself
    assert b"task:1" in restic(tmp_path / "repo", "snapshots", "--json")
    restored = restore(task, run=record, to=tmp_path / "restored", secrets=rig.secrets)
    assert same_tree(source, restored)


def test_a_runs_record_keeps_restics_summary_of_the_snapshot_it_made(
    sshd: SshServer, tmp_path: Path
) -> None:
    task = on_restic(files_task(sshd, tmp_path / "unused", make_tree(tmp_path)), tmp_path / "repo")
    rig = harness(tmp_path)
    assert rig.run(task) is RunStatus.SUCCESSFUL

    record = rig.state.runs.latest_run(task.id)
    assert record is not None
    assert record.snapshot is not None
    [listed] = json.loads(restic(tmp_path / "repo", "snapshots", "--json"))
    # restic 0.14's summary names the snapshot by its short id, 0.15 and later by its full id.
    assert record.snapshot.snapshot_id in (listed["id"], listed["short_id"])
    assert record.snapshot.data_added > 0  # a first snapshot adds everything it holds
    assert record.snapshot.total_bytes_processed == record.size


def test_a_second_run_of_an_unchanged_tree_adds_almost_nothing(
    sshd: SshServer, tmp_path: Path
) -> None:
    source = make_tree(tmp_path, size=4_000_000)
    task = on_restic(files_task(sshd, tmp_path / "unused", source), tmp_path / "repo")
    rig = harness(tmp_path)
    assert rig.run(task) is RunStatus.SUCCESSFUL
    rig.clock.advance(timedelta(hours=1))  # a new backup name
    assert rig.run(task) is RunStatus.SUCCESSFUL
    log = rig.state.runs.latest_run(task.id)
    assert log is not None
    stats = restic(tmp_path / "repo", "stats", "--mode", "raw-data", "--json")
    assert b"total_size" in stats
    snapshots = restic(tmp_path / "repo", "snapshots", "--json")
    assert snapshots.count(b'"short_id"') == 2
    raw = int(stats.split(b'"total_size":')[1].split(b",")[0])
    assert raw < 4_000_000 * 1.05  # two runs of 4 MB stored about once


def test_verify_of_a_restic_backup_reads_it_to_its_end(sshd: SshServer, tmp_path: Path) -> None:
    task = on_restic(files_task(sshd, tmp_path / "unused", make_tree(tmp_path)), tmp_path / "repo")
    rig = harness(tmp_path)
    assert rig.run(task) is RunStatus.SUCCESSFUL
    record = rig.state.runs.latest_run(task.id)
    assert record is not None
    report = verify(task, record, secrets=rig.secrets)
    assert report.problems == ()
    assert report.checksum_recorded
    assert report.files == 2


def test_a_corrupted_pack_fails_verify(sshd: SshServer, tmp_path: Path) -> None:
    task = on_restic(files_task(sshd, tmp_path / "unused", make_tree(tmp_path)), tmp_path / "repo")
    rig = harness(tmp_path)
    assert rig.run(task) is RunStatus.SUCCESSFUL
    packs = sorted((tmp_path / "repo" / "data").rglob("*"), key=lambda p: p.stat().st_size)
    biggest = [pack for pack in packs if pack.is_file()][-1]
    biggest.chmod(0o644)
    data = bytearray(biggest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    biggest.write_bytes(bytes(data))
    record = rig.state.runs.latest_run(task.id)
    assert record is not None
    report = verify(task, record, secrets=rig.secrets)
    assert any("restic" in problem for problem in report.problems), report.problems


def test_a_removed_backup_is_forgotten_by_rotation(sshd: SshServer, tmp_path: Path) -> None:
    from reconciler.models import Storage

    source = make_tree(tmp_path, size=10_000)
    task = on_restic(
        files_task(sshd, tmp_path / "unused", source, storage=Storage(max_backups=1)),
        tmp_path / "repo",
    )
    rig = harness(tmp_path)
    for _ in range(2):
        assert rig.run(task) is RunStatus.SUCCESSFUL
        rig.clock.advance(timedelta(hours=1))
    snapshots = restic(tmp_path / "repo", "snapshots", "--json")
    assert snapshots.count(b'"short_id"') == 1


def mariadb_on_restic(
    sshd: SshServer, mariadb: MariaDbServer, tmp_path: Path
) -> tuple[ResolvedTask, Harness]:
    """The `rshop` database (one table, one row) dumped once into a new restic repository."""
    mariadb.sql("DROP DATABASE IF EXISTS rshop; CREATE DATABASE rshop;")
    mariadb.sql(
        "CREATE TABLE rshop.items (id INT PRIMARY KEY); INSERT INTO rshop.items VALUES (7);"
    )
    connection = database_connection(DatabaseEngine.MYSQL, mariadb.port, mariadb.username)
    source = Source(type=SourceType.DATABASE, database_name="rshop")
    task = on_restic(
        make_task(sshd, tmp_path / "unused", source, database=connection), tmp_path / "repo"
    )
    rig = harness(tmp_path, DB_PASSWORD=mariadb.password)
    assert rig.run(task) is RunStatus.SUCCESSFUL
    return task, rig


@pytest.mark.servers
def test_a_mariadb_dump_round_trips_through_restic(
    sshd: SshServer, mariadb: MariaDbServer, tmp_path: Path
) -> None:
    task, rig = mariadb_on_restic(sshd, mariadb, tmp_path)
    dump = restore(task, run=None, to=tmp_path / "restored", secrets=rig.secrets)
    assert "INSERT INTO `items` VALUES" in dump.read_text()
    assert "(7)" in dump.read_text()


@pytest.mark.servers
def test_a_postgresql_dump_round_trips_through_restic(
    sshd: SshServer, postgres: PostgresServer, tmp_path: Path
) -> None:
    postgres.sql("DROP DATABASE IF EXISTS rshop")
    postgres.sql("CREATE DATABASE rshop")
    postgres.sql("CREATE TABLE items (id int PRIMARY KEY); INSERT INTO items VALUES (7);", "rshop")
    connection = database_connection(DatabaseEngine.POSTGRESQL, postgres.port, postgres.username)
    source = Source(type=SourceType.DATABASE, database_name="rshop")
    task = on_restic(
        make_task(sshd, tmp_path / "unused", source, database=connection), tmp_path / "repo"
    )
    rig = harness(tmp_path, DB_PASSWORD=postgres.password)
    assert rig.run(task) is RunStatus.SUCCESSFUL
    dump = restore(task, run=None, to=tmp_path / "restored", secrets=rig.secrets)
    assert "PostgreSQL database dump complete" in dump.read_text()


def test_a_wrong_password_is_named(tmp_path: Path) -> None:
    restic(tmp_path / "repo", "init")
    store = open_destination(restic_destination(tmp_path / "repo"), lambda _: "not-it")
    with pytest.raises(ResticError, match="password is wrong") as caught:
        store.list_backups("")
    assert caught.value.problem is ResticProblem.WRONG_PASSWORD


def test_a_missing_repository_is_not_created_when_create_is_false(tmp_path: Path) -> None:
    store = open_destination(restic_destination(tmp_path / "repo", create=False), lambda _: "x")
    with pytest.raises(ResticError, match="create: false") as caught:
        store.list_backups("")
    assert caught.value.problem is ResticProblem.NO_REPOSITORY
    assert not (tmp_path / "repo").exists()


def test_a_missing_repository_is_created_on_first_use(tmp_path: Path) -> None:
    store = open_destination(restic_destination(tmp_path / "repo"), lambda _: PASSWORD)
    assert store.list_backups("") == []
    assert (tmp_path / "repo" / "config").is_file()


def test_a_locked_repository_is_retried_then_named(tmp_path: Path) -> None:
    restic(tmp_path / "repo", "init")
    env = {**os.environ, "RESTIC_REPOSITORY": str(tmp_path / "repo"), "RESTIC_PASSWORD": PASSWORD}
    # A running backup holds a lock; forget needs the repository to itself.
    holder = subprocess.Popen(
        ["restic", "backup", "--stdin", "--stdin-filename", "held"],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(2)
        retries: list[str] = []
        store = ResticStore(
            restic_destination(tmp_path / "repo"),
            lambda _: PASSWORD,
            lock_attempts=3,
            lock_first_pause=0.1,
            on_retry=retries.append,
        )
        with pytest.raises(ResticError, match=r"locked.*after 3 attempts") as caught:
            store.run("forget", ["restic", "forget", "--keep-last", "1"])
        assert caught.value.problem is ResticProblem.LOCKED
        assert len(retries) == 2
        assert "attempt 1 of 3" in retries[0]
    finally:
        holder.kill()
        holder.wait()
        assert holder.stdin is not None
        holder.stdin.close()


def test_the_run_log_shows_restics_own_progress(sshd: SshServer, tmp_path: Path) -> None:
    task = on_restic(
        files_task(sshd, tmp_path / "unused", make_tree(tmp_path, size=20_000_000)),
        tmp_path / "repo",
    )
    rig = harness(tmp_path)
    # Each read of the clock is a second later: every chunk is due a progress line.
    rig.runner = rig.new_runner(
        clock=TickingClock(T0, timedelta(seconds=1)), progress_every=timedelta(seconds=1)
    )
    assert rig.run(task) is RunStatus.SUCCESSFUL
    record = rig.state.runs.latest_run(task.id)
    assert record is not None
    assert re.search(
        r"streamed .* MB so far .*; restic has read [\d.,]+ MB in \d+ s", record.output
    )


def test_an_error_restic_reports_and_goes_on_past_is_a_log_line() -> None:
    said = describe_message(
        {"message_type": "error", "error": {"message": "read: EOF"}, "during": "archival",
         "item": "/site.tar"}
    )  # fmt: skip
    assert said == "restic error: read: EOF (archival /site.tar)"
    assert describe_message({"message_type": "verbose_status", "action": "new"}) is None
