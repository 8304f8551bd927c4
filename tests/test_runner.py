"""The runner against real SSH and PostgreSQL: rotation, failures, recovery, exclusivity."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import sqlite3
import time
from datetime import timedelta
from pathlib import Path

import pytest

from reconciler.backup import INTERRUPTED_BY_STOP
from reconciler.destinations import partial_name
from reconciler.models import DatabaseEngine, Keep, ResolvedTask, Source, SourceType, Storage
from reconciler.retention import backup_name
from reconciler.runner import Admission
from reconciler.state.runs import RunTarget
from reconciler.state.sqlite import SqliteStateStore
from reconciler.types import RunStatus, TaskStatus
from tests.clock import TickingClock
from tests.runs import T0, Harness, database_connection, files_task, make_task
from tests.servers import BlockedDump, PostgresServer, SshServer


def stored(destination: Path) -> list[str]:
    return sorted(path.name for path in destination.iterdir())


def source_dir(tmp_path: Path) -> Path:
    source = tmp_path / "src"
    source.mkdir()
    (source / "a.txt").write_text("a")
    return source


def test_rotation_after_successful_runs_keeps_exactly_max_backups(
    sshd: SshServer, tmp_path: Path
) -> None:
    dest = tmp_path / "dest"
    task = files_task(sshd, dest, source_dir(tmp_path), storage=Storage(max_backups=2))
    harness = Harness(tmp_path)
    for _ in range(4):
        assert harness.run(task) is RunStatus.SUCCESSFUL
        harness.clock.advance(timedelta(hours=1))
    newest = [backup_name(1, None, T0 + timedelta(hours=h), "tar.zst") for h in (2, 3)]
    assert stored(dest) == newest


def test_a_failing_dump_is_a_failed_run_that_deletes_nothing(
    sshd: SshServer, tmp_path: Path
) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    old = [backup_name(1, None, T0 - timedelta(days=d), "sql.zst") for d in (1, 2, 3)]
    for name in old:
        (dest / name).write_bytes(b"old")
    connection = database_connection(DatabaseEngine.POSTGRESQL, 1, "nobody")
    source = Source(type=SourceType.DATABASE, database_name="no_such_database")
    task = make_task(sshd, dest, source, database=connection, storage=Storage(max_backups=1))
    harness = Harness(tmp_path, {"DB_PASSWORD": "x"})
    assert harness.run(task) is RunStatus.FAILED
    record = harness.state.runs.latest_run(task.id)
    assert record is not None
    assert record.reason is not None
    assert "exited with" in record.reason
    assert record.backup_name is None
    assert stored(dest) == sorted(old)
    assert harness.state.runs.task_status(task.id) is TaskStatus.READY


def test_a_killed_run_is_recovered_with_its_partial_file_removed(
    sshd: SshServer, tmp_path: Path
) -> None:
    dest = tmp_path / "dest"
    task = files_task(sshd, dest, source_dir(tmp_path))
    harness = Harness(tmp_path)
    run_id = harness.state.runs.start_run(task.id, "schedule", T0)
    name = backup_name(1, None, T0, "tar.zst")
    harness.state.runs.record_target(
        run_id, RunTarget(task.destination.model_dump_json(), "", name)
    )
    dest.mkdir()
    (dest / partial_name(name)).write_bytes(b"half a backup")
    (dest / partial_name(backup_name(2, None, T0, "tar.zst"))).write_bytes(b"not this run's")
    assert harness.state.runs.task_status(task.id) is TaskStatus.RUNNING

    recovered = harness.new_runner().recover()

    assert [record.id for record in recovered] == [run_id]
    record = harness.state.runs.run(run_id)
    assert record is not None
    assert record.status is RunStatus.FAILED
    assert record.reason == "interrupted by a daemon restart"
    assert f"removed the partial backup of ./{name}" in record.output
    assert stored(dest) == [partial_name(backup_name(2, None, T0, "tar.zst"))]
    assert harness.state.runs.task_status(task.id) is TaskStatus.READY


def test_a_paused_task_is_not_run(sshd: SshServer, tmp_path: Path) -> None:
    task = files_task(sshd, tmp_path / "dest", source_dir(tmp_path), paused=True)
    harness = Harness(tmp_path)
    assert harness.runner.request_run(task) is Admission.PAUSED
    assert harness.state.runs.latest_run(task.id) is None


def test_a_task_running_in_another_process_is_already_running(
    sshd: SshServer, tmp_path: Path
) -> None:
    task = files_task(sshd, tmp_path / "dest", source_dir(tmp_path))
    harness = Harness(tmp_path)
    other_process = SqliteStateStore(tmp_path / "history.sqlite")
    other_process.runs.start_run(task.id, "cli", T0)
    assert harness.runner.request_run(task) is Admission.ALREADY_RUNNING
    harness.runner.queue_scheduled(task, T0)
    assert not harness.runner.is_running(task.id)
    other_process.close()


def test_log_lines_are_stored_while_the_run_happens(sshd: SshServer, tmp_path: Path) -> None:
    task = files_task(sshd, tmp_path / "dest", source_dir(tmp_path))
    harness = Harness(tmp_path)
    harness.run(task)
    record = harness.state.runs.latest_run(task.id)
    assert record is not None
    assert "connecting to root@127.0.0.1" in record.output
    assert "stored backup_1_" in record.output


def test_a_long_stream_logs_its_progress(sshd: SshServer, tmp_path: Path) -> None:
    source = tmp_path / "big"
    source.mkdir()
    (source / "random.bin").write_bytes(os.urandom(24 << 20))
    task = files_task(sshd, tmp_path / "dest", source)
    harness = Harness(tmp_path)
    harness.runner = harness.new_runner(
        clock=TickingClock(T0, timedelta(seconds=10)), progress_every=timedelta(seconds=30)
    )
    assert harness.run(task) is RunStatus.SUCCESSFUL
    record = harness.state.runs.latest_run(task.id)
    assert record is not None
    progress = [line for line in record.output.splitlines() if "streamed" in line]
    assert progress
    assert all("MB so far" in line and "MB/s" in line for line in progress)


def slow_task(
    sshd: SshServer, postgres: PostgresServer, tmp_path: Path, **kw: object
) -> ResolvedTask:
    connection = database_connection(DatabaseEngine.POSTGRESQL, postgres.port, postgres.username)
    source = Source(type=SourceType.DATABASE, database_name="slow")
    return make_task(sshd, tmp_path / "dest", source, database=connection, **kw)  # type: ignore[arg-type]


def wait_for_process(marker: bytes) -> list[bytes]:
    """Every process command line, once one containing `marker` shows up."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        cmdlines = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    cmdlines.append((entry / "cmdline").read_bytes())
                except OSError:
                    continue
        if any(marker in cmdline for cmdline in cmdlines):
            return cmdlines
        time.sleep(0.02)
    raise AssertionError(f"no process with {marker!r} appeared")


@pytest.mark.servers
def test_the_database_password_is_in_no_process_list_during_a_dump(
    sshd: SshServer, postgres: PostgresServer, blocked: BlockedDump, tmp_path: Path
) -> None:
    task = slow_task(sshd, postgres, tmp_path)
    harness = Harness(tmp_path, {"DB_PASSWORD": postgres.password})
    assert harness.runner.request_run(task) is Admission.ACCEPTED
    cmdlines = wait_for_process(b"pg_dump\x00")
    assert not any(postgres.password.encode() in cmdline for cmdline in cmdlines)
    blocked.release()
    harness.runner.wait(task.id, timeout=60)
    record = harness.state.runs.latest_run(task.id)
    assert record is not None
    assert record.status is RunStatus.SUCCESSFUL
    assert postgres.password not in record.output


@pytest.mark.servers
def test_a_task_never_runs_twice_at_once_and_its_server_is_busy(
    sshd: SshServer, postgres: PostgresServer, blocked: BlockedDump, tmp_path: Path
) -> None:
    task = slow_task(sshd, postgres, tmp_path)
    same_server = files_task(sshd, tmp_path / "dest2", source_dir(tmp_path), task_id=2)
    other_server = files_task(sshd, tmp_path / "dest3", tmp_path / "src", task_id=3, server_id=2)
    harness = Harness(tmp_path, {"DB_PASSWORD": postgres.password})
    assert harness.runner.request_run(task) is Admission.ACCEPTED
    wait_for_process(b"pg_dump\x00")
    assert harness.runner.is_running(task.id)
    assert harness.runner.request_run(task) is Admission.ALREADY_RUNNING
    harness.runner.queue_scheduled(task, T0 + timedelta(days=1))  # skipped: still running
    assert harness.runner.request_run(same_server) is Admission.SERVER_BUSY
    assert harness.run(other_server) is RunStatus.SUCCESSFUL
    blocked.release()
    harness.runner.wait(task.id, timeout=60)
    runs, total = harness.state.runs.page(task.id, 0, 10)
    assert total == 1
    assert runs[0].status is RunStatus.SUCCESSFUL
    assert not harness.runner.is_running(task.id)


@pytest.mark.servers
def test_closing_the_runner_cancels_a_running_backup_and_keeps_no_partial(
    sshd: SshServer, postgres: PostgresServer, blocked: BlockedDump, tmp_path: Path
) -> None:
    task = slow_task(sshd, postgres, tmp_path)
    harness = Harness(tmp_path, {"DB_PASSWORD": postgres.password})
    assert harness.runner.request_run(task) is Admission.ACCEPTED
    wait_for_process(b"pg_dump\x00")
    asyncio.run(harness.runner.close())
    record = harness.state.runs.latest_run(task.id)
    assert record is not None
    assert record.status is RunStatus.FAILED
    assert record.reason == INTERRUPTED_BY_STOP
    assert stored(tmp_path / "dest") == []


@pytest.mark.servers
def test_a_run_whose_record_cannot_be_finished_releases_its_task_and_logs_why(
    sshd: SshServer,
    postgres: PostgresServer,
    blocked: BlockedDump,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    task = slow_task(sshd, postgres, tmp_path)
    harness = Harness(tmp_path, {"DB_PASSWORD": postgres.password})
    assert harness.runner.request_run(task) is Admission.ACCEPTED
    wait_for_process(b"pg_dump\x00")
    record = harness.state.runs.latest_run(task.id)
    assert record is not None
    other_process = SqliteStateStore(tmp_path / "history.sqlite")  # finishes the run under our feet
    other_process.runs.finish_run(record.id, RunStatus.FAILED, T0, reason="finished elsewhere")
    other_process.close()
    blocked.release()
    harness.runner.wait(task.id, timeout=60)
    assert not harness.runner.is_running(task.id)
    assert harness.runner.request_run(task) is Admission.ACCEPTED
    harness.runner.wait(task.id, timeout=60)
    failures = [r for r in caplog.records if r.levelno >= logging.ERROR and r.exc_info]
    assert [r.getMessage() for r in failures] == [f"task 1 run {record.id}: unexpected error"]
    assert f"cannot finish run {record.id}" in str(failures[0].exc_info[1])  # type: ignore[index]


def test_a_run_whose_end_cannot_be_recorded_at_first_is_recorded_failed_once_it_can(
    sshd: SshServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "a.txt").write_text("a\n")
    task = files_task(sshd, tmp_path / "dest", source)
    harness = Harness(tmp_path)
    # A state store that refuses to finish runs for a moment, as a failing disk would.
    raw = sqlite3.connect(tmp_path / "history.sqlite", isolation_level=None)
    raw.executescript(
        "CREATE TABLE refuse (x); INSERT INTO refuse VALUES (1);"
        "CREATE TRIGGER refuse_finish BEFORE UPDATE OF status ON runs"
        " WHEN (SELECT COUNT(*) FROM refuse) > 0 BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END;"
    )
    assert harness.runner.request_run(task) is Admission.ACCEPTED
    for _ in range(600):  # until the run has tried to record its end, and failed
        if any("unexpected error" in record.getMessage() for record in caplog.records):
            break
        time.sleep(0.05)
    raw.execute("DELETE FROM refuse")
    raw.close()
    harness.runner.wait(task.id, timeout=60)

    record = harness.state.runs.latest_run(task.id)
    assert record is not None
    assert record.status is RunStatus.FAILED
    assert record.reason == "the run's end could not be recorded (the daemon's log says why)"
    assert harness.runner.request_run(task) is Admission.ACCEPTED
    harness.runner.wait(task.id, timeout=60)


def test_a_run_writes_a_line_to_the_daemon_log_when_it_starts_and_when_it_ends(
    sshd: SshServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="reconciler.runner")
    good = files_task(sshd, tmp_path / "dest", source_dir(tmp_path))
    bad = files_task(sshd, tmp_path / "dest2", tmp_path / "missing", task_id=2, server_id=2)
    harness = Harness(tmp_path)
    assert harness.run(good) is RunStatus.SUCCESSFUL
    assert harness.run(bad) is RunStatus.FAILED
    good_run, bad_run = harness.state.runs.latest_run(1), harness.state.runs.latest_run(2)
    assert good_run is not None
    assert bad_run is not None
    assert bad_run.reason is not None
    lines = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "reconciler.runner"]
    assert lines[0] == ("INFO", f"task 1 run {good_run.id} started (manual)")
    assert re.fullmatch(
        rf"task 1 run {good_run.id} successful in \d+\.\d s, {good_run.size} bytes", lines[1][1]
    )
    assert lines[2] == ("INFO", f"task 2 run {bad_run.id} started (manual)")
    assert lines[3][0] == "WARNING"
    assert re.fullmatch(
        rf"task 2 run {bad_run.id} failed in \d+\.\d s, 0 bytes: {re.escape(bad_run.reason)}",
        lines[3][1],
    )


def test_remote_error_lines_are_stored_in_batches_not_one_row_each(
    sshd: SshServer, tmp_path: Path
) -> None:
    source = source_dir(tmp_path)
    for i in range(600):  # tar warns once per socket it skips
        with socket.socket(socket.AF_UNIX) as unix:
            unix.bind(str(source / f"s{i}"))
    task = files_task(sshd, tmp_path / "dest", source)
    harness = Harness(tmp_path)
    assert harness.run(task) is RunStatus.SUCCESSFUL
    record = harness.state.runs.latest_run(task.id)
    assert record is not None
    assert record.output.count("socket ignored") == 600
    with sqlite3.connect(tmp_path / "history.sqlite") as db:
        (rows,) = db.execute("SELECT COUNT(*) FROM run_logs WHERE run_id = ?", (record.id,))
    assert rows[0] <= 20


def test_runs_beyond_the_newest_per_task_or_older_than_the_age_limit_are_pruned(
    sshd: SshServer, tmp_path: Path
) -> None:
    task = files_task(sshd, tmp_path / "dest", source_dir(tmp_path), storage=Storage(max_backups=0))
    harness = Harness(tmp_path)
    harness.runner = harness.new_runner(keep_runs=3, keep_run_age=timedelta(days=90))
    ids = []
    for _ in range(5):
        assert harness.run(task) is RunStatus.SUCCESSFUL
        ids.append(harness.state.runs.latest_run(task.id).id)  # type: ignore[union-attr]
        harness.clock.advance(timedelta(days=1))
    assert [run.id for run in harness.state.runs.page(task.id, 0, 10)[0]] == ids[:1:-1]
    other = files_task(sshd, tmp_path / "dest2", tmp_path / "src", task_id=2, server_id=2)
    harness.clock.advance(timedelta(days=90))
    assert harness.run(other) is RunStatus.SUCCESSFUL
    assert harness.state.runs.page(task.id, 0, 10) == ([], 0)


def test_a_run_stores_its_first_lines_and_its_last_ones_when_it_logs_too_many(
    sshd: SshServer, tmp_path: Path
) -> None:
    source = tmp_path / "src"
    source.mkdir()
    for i in range(300):
        with socket.socket(socket.AF_UNIX) as unix:
            unix.bind(str(source / f"s{i:03}"))
    task = files_task(sshd, tmp_path / "dest", source, storage=Storage(max_backups=1))
    harness = Harness(tmp_path)
    harness.runner = harness.new_runner(max_log_lines=100)
    assert harness.run(task) is RunStatus.SUCCESSFUL
    record = harness.state.runs.latest_run(task.id)
    assert record is not None
    lines = [line.split(" ", 1)[1] for line in record.output.splitlines()]
    assert len(lines) == 100 + 1 + 20
    assert lines[0].startswith("connecting to")
    note = lines[100]
    assert re.fullmatch(
        r"\[\d+ log lines not stored: a run stores its first 100 lines and its last 20\]", note
    )
    assert lines[-1].startswith("stored backup_1_")
    assert int(note[1:].split()[0]) + 120 == 3 + 300  # connecting, streaming, stored; sockets


def test_a_run_rotates_by_keep_counting_backups_it_did_not_make(
    sshd: SshServer, tmp_path: Path
) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    # Copied in from elsewhere: the state store knows none of them.
    day_before, its_earlier_run, older, months_ago = (
        backup_name(1, None, T0 - delta, "tar.zst")
        for delta in (
            timedelta(days=1),
            timedelta(days=1, hours=2),
            timedelta(days=2),
            timedelta(days=47),
        )
    )
    others = [backup_name(11, None, T0 - timedelta(days=2), "tar.zst"), "notes.txt"]
    for name in [day_before, its_earlier_run, older, months_ago, *others]:
        (dest / name).write_bytes(b"old")
    keep = Keep(daily=2, monthly=3)
    task = files_task(sshd, dest, source_dir(tmp_path), storage=Storage(keep=keep))
    harness = Harness(tmp_path)
    assert harness.run(task) is RunStatus.SUCCESSFUL
    new = backup_name(1, None, T0, "tar.zst")
    # daily 2024-05-01 and 2024-04-30 (its newest); monthly 2024-05, 2024-04 and 2024-03
    assert stored(dest) == sorted([new, day_before, months_ago, *others])
    record = harness.state.runs.latest_run(task.id)
    assert record is not None
    log = "\n".join(harness.state.runs.log_after(record.id, 0)[0])
    assert f"rotation: deleted {older}" in log
    assert f"rotation: deleted {its_earlier_run}" in log
