"""The SQLite state store's own guarantees: its file, its schema and its migrations."""

from __future__ import annotations

import os
import pwd
import sqlite3
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from reconciler.state import StateStore
from reconciler.state.errors import StateError
from reconciler.state.sqlite import SqliteStateStore
from reconciler.state.sqlite.connection import _MIGRATIONS
from reconciler.types import RunStatus, TaskStatus
from tests.test_state import T0, completed_run


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "history.sqlite3"


@pytest.fixture
def store(db_path: Path) -> Iterator[StateStore]:
    opened = SqliteStateStore(db_path)
    yield opened
    opened.close()


def test_a_crash_mid_run_is_recovered_as_interrupted(db_path: Path) -> None:
    # A real process that dies mid-run without finishing or closing anything.
    script = textwrap.dedent(
        f"""
        import os
        from datetime import datetime, UTC
        from reconciler.state.sqlite import SqliteStateStore
        from reconciler.types import RunStatus
        t0 = datetime.fromisoformat({T0.isoformat()!r})
        store = SqliteStateStore({str(db_path)!r})
        done = store.runs.start_run(8, "schedule", t0)
        store.runs.finish_run(done, RunStatus.SUCCESSFUL, t0)
        run_id = store.runs.start_run(7, "schedule", t0)
        store.runs.append_logs(run_id, [(t0, "started")])
        print(done, run_id, flush=True)
        os._exit(1)
        """
    )
    crashed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert crashed.returncode == 1, crashed.stderr
    done, run_id = (int(part) for part in crashed.stdout.split())

    reopened = SqliteStateStore(db_path)
    try:
        later = T0 + timedelta(hours=1)
        recovered = reopened.runs.recover_interrupted(later)

        assert [run.id for run in recovered] == [run_id]
        assert recovered[0].status is RunStatus.FAILED
        assert recovered[0].reason == "interrupted by a daemon restart"
        assert recovered[0].finished_at == later
        assert "started" in recovered[0].output
        assert reopened.runs.task_status(7) is TaskStatus.READY
        finished = reopened.runs.run(done)
        assert finished is not None
        assert finished.status is RunStatus.SUCCESSFUL
        assert reopened.runs.recover_interrupted(later) == []
    finally:
        reopened.close()


def test_only_a_hash_of_the_token_is_stored(store: StateStore, db_path: Path) -> None:
    _, plaintext = store.tokens.create_token(3, "ci", ["tasks:read"], T0)
    store.close()
    stored = b"".join(
        path.read_bytes() for path in db_path.parent.iterdir() if path.name.startswith("history")
    )

    assert b"ci" in stored
    assert plaintext.encode() not in stored
    assert plaintext[3:].encode() not in stored


def test_a_newer_schema_is_refused_with_a_clear_error(db_path: Path) -> None:
    raw = sqlite3.connect(db_path)
    raw.execute("PRAGMA user_version = 99")
    raw.close()

    with pytest.raises(StateError, match="schema version 99"):
        SqliteStateStore(db_path)


def test_the_database_is_in_wal_mode(store: StateStore, db_path: Path) -> None:
    raw = sqlite3.connect(db_path)
    try:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        raw.close()


def test_a_version_1_store_keeps_its_runs_and_logs_when_upgraded(db_path: Path) -> None:
    raw = sqlite3.connect(db_path)
    raw.executescript(_MIGRATIONS[0])
    raw.execute("PRAGMA user_version = 1")
    raw.execute(
        "INSERT INTO runs (task_id, status, trigger, started_at) VALUES"
        " (7, 'running', 'schedule', '2024-03-01T12:00:00.000000Z')"
    )
    raw.executemany(
        "INSERT INTO run_logs (run_id, at, line) VALUES (1, ?, ?)",
        [("2024-03-01T12:00:00.000000Z", "connecting"), ("2024-03-01T12:00:05.000000Z", "dumping")],
    )
    raw.commit()
    raw.close()

    upgraded = SqliteStateStore(db_path)
    try:
        run_id = upgraded.runs.start_run(8, "schedule", T0)
        upgraded.runs.append_logs(run_id, [(T0, "new")])
        old = upgraded.runs.run(1)
        assert old is not None
        assert old.output == "2024-03-01T12:00:00Z connecting\n2024-03-01T12:00:05Z dumping\n"
        assert upgraded.runs.log_after(1, 1) == (["2024-03-01T12:00:05Z dumping"], 2)
        assert [run.id for run in upgraded.runs.recover_interrupted(T0)] == [1, run_id]
    finally:
        upgraded.close()


def test_pruning_keeps_the_newest_runs_of_a_task_and_drops_old_ones_with_their_logs(
    store: StateStore, db_path: Path
) -> None:
    ids = [completed_run(store, 7, T0 + timedelta(days=i), "line") for i in range(5)]
    old_other = completed_run(store, 8, T0, "other")
    running = store.runs.start_run(9, "schedule", T0)

    store.runs.prune_runs(7, keep=2, started_before=T0 + timedelta(hours=1))

    assert [run.id for run in store.runs.page(7, 0, 10)[0]] == [ids[4], ids[3]]
    assert store.runs.run(old_other) is None
    assert store.runs.run(running) is not None
    with sqlite3.connect(db_path) as raw:
        (count,) = raw.execute("SELECT COUNT(*) FROM run_logs").fetchone()
    assert count == 2


def test_the_state_file_is_created_private_in_a_private_directory(tmp_path: Path) -> None:
    state = tmp_path / "new" / "state.db"
    store = SqliteStateStore(state)
    try:
        store.runs.start_run(7, "schedule", T0)  # the WAL file exists from the first write
        assert store.created
    finally:
        store.close()
    assert stat.S_IMODE(state.parent.stat().st_mode) == 0o700
    for path in state.parent.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    reopened = SqliteStateStore(state)
    assert not reopened.created
    reopened.close()


def test_an_existing_state_file_readable_by_others_is_made_private(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    SqliteStateStore(state).close()
    state.chmod(0o644)
    SqliteStateStore(state).close()
    assert stat.S_IMODE(state.stat().st_mode) == 0o600


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o1777])
def test_a_state_directory_others_can_write_to_is_refused(tmp_path: Path, mode: int) -> None:
    directory = tmp_path / "shared"
    directory.mkdir()
    directory.chmod(mode)
    with pytest.raises(StateError) as refused:
        SqliteStateStore(directory / "state.db")
    assert str(refused.value) == (
        f"state directory {directory}: other users can write to it (mode {mode:04o}), so they"
        f" could replace the state store or the secrets beside it; run chmod go-w {directory}"
    )
    assert list(directory.iterdir()) == []


def test_a_state_directory_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "theirs"
    directory.mkdir(mode=0o700)
    nobody = pwd.getpwnam("nobody")
    os.chown(directory, nobody.pw_uid, nobody.pw_gid)
    with pytest.raises(StateError, match=f"owned by uid {nobody.pw_uid}"):
        SqliteStateStore(directory / "state.db")


def _shared_memory_lock_holder(db_path: Path) -> int:
    """The pid of a process holding a lock on SQLite's "dead man switch" byte of `-shm`, seen from
    another process (POSIX locks never conflict within one), or 0 when none holds it.

    Every connection keeps a shared lock on that byte; the first connection to take it exclusively
    takes itself for the only one and resets the shared memory (https://sqlite.org/walformat.html,
    "the DMS lock"): byte 120 + 8 of the unix VFS's lock area."""
    script = textwrap.dedent(
        f"""
        import fcntl, os, struct
        descriptor = os.open({str(db_path) + "-shm"!r}, os.O_RDWR)
        wanted = struct.pack("hhqqi", fcntl.F_WRLCK, os.SEEK_SET, 128, 1, 0)
        kind, _, _, _, pid = struct.unpack("hhqqi", fcntl.fcntl(descriptor, fcntl.F_GETLK, wanted))
        print(0 if kind == fcntl.F_UNLCK else pid)
        """
    )
    found = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    return int(found.stdout)


def test_an_open_store_keeps_sqlites_shared_memory_lock(db_path: Path) -> None:
    # Closing any descriptor of a file drops every POSIX lock this process holds on it, so a
    # descriptor opened and closed beside SQLite's own silently gave up the lock.
    store = SqliteStateStore(db_path)
    try:
        completed_run(store, 7, T0)

        assert _shared_memory_lock_holder(db_path) == os.getpid()
    finally:
        store.close()


def test_a_store_survives_other_processes_opening_the_state_while_it_writes(
    db_path: Path,
) -> None:
    # The daemon writes while a CLI (`reconciler token create`, `status`) opens the same file.
    # A process that took itself for the first connection truncated the shared memory under the
    # writer, which then died of SIGBUS or read a wal-index rebuilt beneath it.
    SqliteStateStore(db_path).close()
    writer_script = textwrap.dedent(
        f"""
        from datetime import datetime
        from reconciler.state.sqlite import SqliteStateStore
        from reconciler.types import RunStatus
        t0 = datetime.fromisoformat({T0.isoformat()!r})
        store = SqliteStateStore({str(db_path)!r})
        print("open", flush=True)
        for number in range(3000):
            run_id = store.runs.start_run(number, "schedule", t0)
            store.runs.append_logs(run_id, [(t0, "x" * 2000)])
            store.runs.finish_run(run_id, RunStatus.SUCCESSFUL, t0)
        store.close()
        """
    )
    writer = subprocess.Popen(
        [sys.executable, "-c", writer_script], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert writer.stdout is not None
    assert writer.stdout.readline() == b"open\n"
    while writer.poll() is None:
        reader = SqliteStateStore(db_path)
        reader.runs.latest_run(1)
        reader.close()
    _, errors = writer.communicate()

    assert writer.returncode == 0, errors.decode(errors="replace")[-2000:]
    store = SqliteStateStore(db_path)
    try:
        assert len(store.runs.task_statuses(list(range(3000)))) == 3000
    finally:
        store.close()
