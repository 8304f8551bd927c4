from __future__ import annotations

import os
import pwd
import sqlite3
import stat
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from reconciler.state import StateStore
from reconciler.state.errors import StateError
from reconciler.state.runs import LogTail, RunInProgressError
from reconciler.state.sqlite import SqliteStateStore
from reconciler.state.sqlite.connection import _MIGRATIONS
from reconciler.types import RunStatus, TaskStatus

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "history.sqlite3"


@pytest.fixture
def history(db_path: Path) -> Iterator[StateStore]:
    opened = SqliteStateStore(db_path)
    yield opened
    opened.close()


def completed_run(history: StateStore, task_id: int, at: datetime, *lines: str) -> int:
    run_id = history.runs.start_run(task_id, "schedule", at)
    for line in lines:
        history.runs.append_logs(run_id, [(at, line)])
    history.runs.finish_run(run_id, RunStatus.SUCCESSFUL, at)
    return run_id


def test_a_started_run_is_running_and_so_is_its_task(history: StateStore) -> None:
    run_id = history.runs.start_run(7, "schedule", T0)

    run = history.runs.run(run_id)
    assert run is not None
    assert (run.task_id, run.status, run.trigger) == (7, RunStatus.RUNNING, "schedule")
    assert run.started_at == T0
    assert run.finished_at is None
    assert history.runs.task_status(7) is TaskStatus.RUNNING


def test_statuses_of_several_tasks_come_from_one_question(history: StateStore) -> None:
    history.runs.start_run(7, "schedule", T0)
    finished = history.runs.start_run(8, "manual", T0)
    history.runs.finish_run(
        finished, RunStatus.SUCCESSFUL, T0, size=1, backup_name=None, reason=None
    )

    assert history.runs.task_statuses([7, 8, 9]) == {
        7: TaskStatus.RUNNING,
        8: TaskStatus.READY,
        9: TaskStatus.READY,
    }


def test_a_task_with_a_run_in_progress_cannot_start_another(db_path: Path) -> None:
    daemon, cli = (
        SqliteStateStore(db_path),
        SqliteStateStore(db_path),
    )  # two processes sharing one state file
    daemon.runs.start_run(7, "schedule", T0)
    with pytest.raises(RunInProgressError, match="task 7 is already running"):
        cli.runs.start_run(7, "cli", T0)
    assert cli.runs.start_run(8, "cli", T0) > 0
    daemon.close()
    cli.close()


def test_a_finished_run_lets_the_next_one_start(history: StateStore) -> None:
    first = history.runs.start_run(7, "schedule", T0)
    history.runs.finish_run(first, RunStatus.SUCCESSFUL, T0)
    assert history.runs.start_run(7, "manual", T0) != first


def test_a_task_never_run_is_ready(history: StateStore) -> None:
    assert history.runs.task_status(1) is TaskStatus.READY
    assert history.runs.latest_run(1) is None
    assert history.runs.run(1) is None


def test_finishing_a_run_records_its_outcome_and_readies_the_task(history: StateStore) -> None:
    run_id = history.runs.start_run(7, "manual", T0)
    history.runs.finish_run(
        run_id,
        RunStatus.SUCCESSFUL,
        T0 + timedelta(minutes=3),
        size=1234,
        backup_name="db-2024.tar.zst",
    )

    run = history.runs.run(run_id)
    assert run is not None
    assert run.status is RunStatus.SUCCESSFUL
    assert run.finished_at == T0 + timedelta(minutes=3)
    assert (run.size, run.backup_name, run.reason) == (1234, "db-2024.tar.zst", None)
    assert history.runs.task_status(7) is TaskStatus.READY


def test_a_failed_run_keeps_its_reason(history: StateStore) -> None:
    run_id = history.runs.start_run(7, "schedule", T0)
    history.runs.finish_run(run_id, RunStatus.FAILED, T0, reason="ssh: connection refused")

    run = history.runs.run(run_id)
    assert run is not None
    assert (run.status, run.reason) == (RunStatus.FAILED, "ssh: connection refused")


def test_a_run_cannot_finish_twice(history: StateStore) -> None:
    run_id = history.runs.start_run(7, "schedule", T0)
    history.runs.finish_run(run_id, RunStatus.SUCCESSFUL, T0)

    with pytest.raises(StateError, match="already successful"):
        history.runs.finish_run(run_id, RunStatus.FAILED, T0)


def test_a_run_cannot_finish_as_running(history: StateStore) -> None:
    run_id = history.runs.start_run(7, "schedule", T0)

    with pytest.raises(ValueError, match="cannot finish"):
        history.runs.finish_run(run_id, RunStatus.RUNNING, T0)


def test_finishing_an_unknown_run_is_an_error(history: StateStore) -> None:
    with pytest.raises(StateError, match="no such run"):
        history.runs.finish_run(99, RunStatus.FAILED, T0)


def test_logging_to_an_unknown_run_is_an_error(history: StateStore) -> None:
    with pytest.raises(StateError, match="no such run"):
        history.runs.append_logs(99, [(T0, "lost")])


def test_naive_datetimes_are_refused(history: StateStore) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        history.runs.start_run(7, "schedule", datetime(2024, 1, 1))


def test_datetimes_come_back_as_aware_utc(history: StateStore) -> None:
    berlin = timezone(timedelta(hours=2))
    run_id = history.runs.start_run(7, "schedule", datetime(2024, 6, 1, 14, 0, tzinfo=berlin))

    run = history.runs.run(run_id)
    assert run is not None
    assert run.started_at == datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
    assert run.started_at.utcoffset() == timedelta(0)


def test_log_lines_are_timestamped_in_order(history: StateStore) -> None:
    run_id = history.runs.start_run(7, "schedule", T0)
    history.runs.append_logs(run_id, [(T0, "connecting")])
    history.runs.append_logs(run_id, [(T0 + timedelta(seconds=5), "dumping")])

    run = history.runs.run(run_id)
    assert run is not None
    assert run.output == "2024-03-01T12:00:00Z connecting\n2024-03-01T12:00:05Z dumping\n"


def test_a_running_log_is_visible_at_once_to_another_reader(db_path: Path) -> None:
    writer = SqliteStateStore(db_path)
    reader = SqliteStateStore(db_path)
    try:
        run_id = writer.runs.start_run(7, "schedule", T0)
        writer.runs.append_logs(run_id, [(T0, "first line")])

        latest = reader.runs.latest_run(7)
        assert latest is not None
        assert latest.status is RunStatus.RUNNING
        assert "first line" in latest.output

        writer.runs.append_logs(run_id, [(T0, "second line")])
        again = reader.runs.latest_run(7)
        assert again is not None
        assert "second line" in again.output
    finally:
        writer.close()
        reader.close()


def test_the_latest_run_is_the_newest_one(history: StateStore) -> None:
    completed_run(history, 7, T0)
    newest = history.runs.start_run(7, "manual", T0 + timedelta(hours=1))
    history.runs.start_run(8, "schedule", T0 + timedelta(hours=2))

    latest = history.runs.latest_run(7)
    assert latest is not None
    assert latest.id == newest


def test_runs_are_paged_newest_first_with_a_total(history: StateStore) -> None:
    ids = [completed_run(history, 7, T0 + timedelta(hours=i)) for i in range(5)]
    history.runs.start_run(8, "schedule", T0)

    page, total = history.runs.page(7, offset=1, limit=2)

    assert total == 5
    assert [run.id for run in page] == [ids[3], ids[2]]


def test_a_page_past_the_end_is_empty_but_keeps_the_total(history: StateStore) -> None:
    history.runs.start_run(7, "schedule", T0)

    assert history.runs.page(7, offset=10, limit=5) == ([], 1)


def test_runs_of_a_page_carry_their_own_output(history: StateStore) -> None:
    first = completed_run(history, 7, T0, "one")
    second = completed_run(history, 7, T0, "two")

    page, _ = history.runs.page(7, 0, 10)

    assert {run.id: run.output for run in page} == {
        first: "2024-03-01T12:00:00Z one\n",
        second: "2024-03-01T12:00:00Z two\n",
    }


def test_a_crash_mid_run_is_recovered_as_interrupted(db_path: Path) -> None:
    # A real process that dies mid-run without finishing or closing anything.
    script = textwrap.dedent(
        f"""
        import os
        from datetime import datetime, UTC
        from reconciler.state.sqlite import SqliteStateStore
        from reconciler.types import RunStatus
        t0 = datetime.fromisoformat({T0.isoformat()!r})
        history = SqliteStateStore({str(db_path)!r})
        done = history.runs.start_run(8, "schedule", t0)
        history.runs.finish_run(done, RunStatus.SUCCESSFUL, t0)
        run_id = history.runs.start_run(7, "schedule", t0)
        history.runs.append_logs(run_id, [(t0, "started")])
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


def test_last_run_at_is_the_start_of_each_tasks_latest_run(history: StateStore) -> None:
    completed_run(history, 7, T0)
    history.runs.start_run(7, "schedule", T0 + timedelta(hours=1))
    history.runs.start_run(8, "schedule", T0 + timedelta(hours=2))

    assert history.runs.last_run_at() == {
        7: T0 + timedelta(hours=1),
        8: T0 + timedelta(hours=2),
    }
    assert history.runs.last_run_at([8, 9]) == {8: T0 + timedelta(hours=2)}


def test_the_last_fired_slot_replaces_the_previous_one(history: StateStore) -> None:
    history.schedule.record_fire(7, T0)
    history.schedule.record_fire(7, T0 + timedelta(days=1))
    history.schedule.record_fire(8, T0)

    assert history.schedule.last_fired() == {7: T0 + timedelta(days=1), 8: T0}


def test_first_seen_keeps_the_first_time(history: StateStore) -> None:
    history.schedule.mark_seen([1, 2], T0)
    history.schedule.mark_seen([2, 3], T0 + timedelta(hours=1))

    assert history.schedule.first_seen() == {1: T0, 2: T0, 3: T0 + timedelta(hours=1)}


def test_marking_ten_thousand_tasks_seen_is_fast(history: StateStore) -> None:
    started = time.perf_counter()
    history.schedule.mark_seen(range(1, 10_001), T0)
    elapsed = time.perf_counter() - started

    assert len(history.schedule.first_seen()) == 10_000
    assert elapsed < 1.0


def test_a_token_authenticates_and_records_its_use(history: StateStore) -> None:
    record, plaintext = history.tokens.create_token(3, "ci", ["tasks:read", "tasks:write"], T0)

    used = history.tokens.authenticate(plaintext, T0 + timedelta(minutes=1))

    assert plaintext.startswith("rk_")
    assert used is not None
    assert (used.id, used.user_id, used.name) == (record.id, 3, "ci")
    assert used.abilities == ("tasks:read", "tasks:write")
    assert used.last_used_at == T0 + timedelta(minutes=1)
    assert history.tokens.list(3)[0].last_used_at == T0 + timedelta(minutes=1)


@pytest.mark.parametrize("guess", ["", "rk_", "rk_wrong", "not-a-token"])
def test_a_wrong_token_does_not_authenticate(history: StateStore, guess: str) -> None:
    history.tokens.create_token(3, "ci", ["tasks:read"], T0)

    assert history.tokens.authenticate(guess, T0) is None


def test_only_a_hash_of_the_token_is_stored(history: StateStore, db_path: Path) -> None:
    _, plaintext = history.tokens.create_token(3, "ci", ["tasks:read"], T0)
    history.close()
    stored = b"".join(
        path.read_bytes() for path in db_path.parent.iterdir() if path.name.startswith("history")
    )

    assert b"ci" in stored
    assert plaintext.encode() not in stored
    assert plaintext[3:].encode() not in stored


def test_tokens_are_listed_per_user(history: StateStore) -> None:
    mine, _ = history.tokens.create_token(3, "laptop", ["tasks:read"], T0)
    theirs, _ = history.tokens.create_token(4, "ci", ["tasks:read"], T0)

    assert history.tokens.list(3) == [mine]
    assert history.tokens.list() == [mine, theirs]


def test_a_revoked_token_no_longer_authenticates(history: StateStore) -> None:
    record, plaintext = history.tokens.create_token(3, "ci", ["tasks:read"], T0)

    assert history.tokens.revoke_token(record.id) is True
    assert history.tokens.authenticate(plaintext, T0) is None
    assert history.tokens.list(3) == []
    assert history.tokens.revoke_token(record.id) is False


def test_the_highest_recorded_task_id_is_kept_across_restarts(db_path: Path) -> None:
    history = SqliteStateStore(db_path)
    assert history.task_id_counter.highest_task_id() == 0
    history.task_id_counter.record_task_id(10)
    history.task_id_counter.record_task_id(5)
    history.close()

    reopened = SqliteStateStore(db_path)
    try:
        assert reopened.task_id_counter.highest_task_id() == 10
    finally:
        reopened.close()


def test_a_newer_schema_is_refused_with_a_clear_error(db_path: Path) -> None:
    raw = sqlite3.connect(db_path)
    raw.execute("PRAGMA user_version = 99")
    raw.close()

    with pytest.raises(StateError, match="schema version 99"):
        SqliteStateStore(db_path)


def test_the_database_is_in_wal_mode(history: StateStore, db_path: Path) -> None:
    raw = sqlite3.connect(db_path)
    try:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        raw.close()


def test_writes_from_many_threads_are_all_kept(history: StateStore) -> None:
    errors: list[BaseException] = []

    def work(task_id: int) -> None:
        try:
            for i in range(20):
                run_id = history.runs.start_run(task_id, "schedule", T0 + timedelta(seconds=i))
                history.runs.append_logs(run_id, [(T0, f"line {i}")])
                history.runs.finish_run(run_id, RunStatus.SUCCESSFUL, T0)
                history.task_id_counter.record_task_id(task_id * 100 + i)
                history.runs.latest_run(task_id)
        except BaseException as exc:  # collected so the main thread can fail the test
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(task_id,)) for task_id in range(1, 9)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    for task_id in range(1, 9):
        page, total = history.runs.page(task_id, 0, 100)
        assert total == 20
        assert all(run.status is RunStatus.SUCCESSFUL for run in page)
        assert all(
            run.output.endswith(f"line {i}\n")
            for i, run in zip(range(19, -1, -1), page, strict=True)
        )
    assert history.task_id_counter.highest_task_id() == 819


def test_log_lines_are_written_in_one_batch_and_read_back_after_an_offset(
    history: StateStore,
) -> None:
    run_id = history.runs.start_run(7, "schedule", T0)
    history.runs.append_logs(run_id, [(T0, "one"), (T0, "two")])
    history.runs.append_logs(run_id, [(T0, "three")])

    assert history.runs.log_after(run_id, 0) == (
        ["2024-03-01T12:00:00Z one", "2024-03-01T12:00:00Z two", "2024-03-01T12:00:00Z three"],
        3,
    )
    assert history.runs.log_after(run_id, 1) == (
        ["2024-03-01T12:00:00Z two", "2024-03-01T12:00:00Z three"],
        3,
    )
    assert history.runs.log_after(run_id, 3) == ([], 3)
    assert history.runs.log_after(run_id, 0, limit=1) == (["2024-03-01T12:00:00Z one"], 1)


def test_a_log_line_holding_a_newline_stays_one_line(history: StateStore) -> None:
    run_id = history.runs.start_run(7, "schedule", T0)
    history.runs.append_logs(run_id, [(T0, "failed: first\nsecond")])
    assert history.runs.log_after(run_id, 0) == (["2024-03-01T12:00:00Z failed: first\\nsecond"], 1)


def test_a_run_is_read_with_only_the_tail_of_its_log(history: StateStore) -> None:
    run_id = history.runs.start_run(7, "schedule", T0)
    for batch in range(10):
        history.runs.append_logs(run_id, [(T0, f"{batch}.{i}") for i in range(100)])
    run = history.runs.run(run_id, LogTail(lines=150, chars=1 << 20))
    assert run is not None
    lines = run.output.splitlines()
    assert lines[0] == "[850 earlier lines not shown]"
    assert lines[1] == "2024-03-01T12:00:00Z 8.50"
    assert lines[-1] == "2024-03-01T12:00:00Z 9.99"


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
    history: StateStore, db_path: Path
) -> None:
    ids = [completed_run(history, 7, T0 + timedelta(days=i), "line") for i in range(5)]
    old_other = completed_run(history, 8, T0, "other")
    running = history.runs.start_run(9, "schedule", T0)

    history.runs.prune_runs(7, keep=2, started_before=T0 + timedelta(hours=1))

    assert [run.id for run in history.runs.page(7, 0, 10)[0]] == [ids[4], ids[3]]
    assert history.runs.run(old_other) is None
    assert history.runs.run(running) is not None
    with sqlite3.connect(db_path) as raw:
        (count,) = raw.execute("SELECT COUNT(*) FROM run_logs").fetchone()
    assert count == 2


def test_alive_intervals_are_extended_by_the_heartbeat_and_old_ones_forgotten(
    history: StateStore,
) -> None:
    first = history.schedule.begin_alive(T0, forget_before=T0)
    history.schedule.still_alive(first, T0 + timedelta(hours=1))
    second = history.schedule.begin_alive(
        T0 + timedelta(hours=3), forget_before=T0 + timedelta(hours=2)
    )
    history.schedule.still_alive(second, T0 + timedelta(hours=4))

    assert history.schedule.alive_since(T0) == [(T0 + timedelta(hours=3), T0 + timedelta(hours=4))]
    third = history.schedule.begin_alive(T0 + timedelta(hours=5), forget_before=T0)
    assert history.schedule.alive_since(T0 + timedelta(hours=4)) == [
        (T0 + timedelta(hours=3), T0 + timedelta(hours=4)),
        (T0 + timedelta(hours=5), T0 + timedelta(hours=5)),
    ]
    assert third != second


def test_the_state_file_is_created_private_in_a_private_directory(tmp_path: Path) -> None:
    state = tmp_path / "new" / "state.db"
    history = SqliteStateStore(state)
    try:
        history.runs.start_run(7, "schedule", T0)  # the WAL file exists from the first write
        assert history.created
    finally:
        history.close()
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
