from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from reconciler.history import History, HistoryError, RunInProgressError
from reconciler.types import RunStatus, TaskStatus

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "history.sqlite3"


@pytest.fixture
def history(db_path: Path) -> Iterator[History]:
    opened = History(db_path)
    yield opened
    opened.close()


def completed_run(history: History, task_id: int, at: datetime, *lines: str) -> int:
    run_id = history.start_run(task_id, "schedule", at)
    for line in lines:
        history.append_log(run_id, line, at)
    history.finish_run(run_id, RunStatus.SUCCESSFUL, at)
    return run_id


def test_a_started_run_is_running_and_so_is_its_task(history: History) -> None:
    run_id = history.start_run(7, "schedule", T0)

    run = history.run(run_id)
    assert run is not None
    assert (run.task_id, run.status, run.trigger) == (7, RunStatus.RUNNING, "schedule")
    assert run.started_at == T0
    assert run.finished_at is None
    assert history.task_status(7) is TaskStatus.RUNNING


def test_statuses_of_several_tasks_come_from_one_question(history: History) -> None:
    history.start_run(7, "schedule", T0)
    finished = history.start_run(8, "manual", T0)
    history.finish_run(finished, RunStatus.SUCCESSFUL, T0, size=1, backup_name=None, reason=None)

    assert history.task_statuses([7, 8, 9]) == {
        7: TaskStatus.RUNNING,
        8: TaskStatus.READY,
        9: TaskStatus.READY,
    }


def test_a_task_with_a_run_in_progress_cannot_start_another(db_path: Path) -> None:
    daemon, cli = History(db_path), History(db_path)  # two processes sharing one state file
    daemon.start_run(7, "schedule", T0)
    with pytest.raises(RunInProgressError, match="task 7 is already running"):
        cli.start_run(7, "cli", T0)
    assert cli.start_run(8, "cli", T0) > 0
    daemon.close()
    cli.close()


def test_a_finished_run_lets_the_next_one_start(history: History) -> None:
    first = history.start_run(7, "schedule", T0)
    history.finish_run(first, RunStatus.SUCCESSFUL, T0)
    assert history.start_run(7, "manual", T0) != first


def test_a_task_never_run_is_ready(history: History) -> None:
    assert history.task_status(1) is TaskStatus.READY
    assert history.latest_run(1) is None
    assert history.run(1) is None


def test_finishing_a_run_records_its_outcome_and_readies_the_task(history: History) -> None:
    run_id = history.start_run(7, "manual", T0)
    history.finish_run(
        run_id,
        RunStatus.SUCCESSFUL,
        T0 + timedelta(minutes=3),
        size=1234,
        backup_name="db-2024.tar.zst",
    )

    run = history.run(run_id)
    assert run is not None
    assert run.status is RunStatus.SUCCESSFUL
    assert run.finished_at == T0 + timedelta(minutes=3)
    assert (run.size, run.backup_name, run.reason) == (1234, "db-2024.tar.zst", None)
    assert history.task_status(7) is TaskStatus.READY


def test_a_failed_run_keeps_its_reason(history: History) -> None:
    run_id = history.start_run(7, "schedule", T0)
    history.finish_run(run_id, RunStatus.FAILED, T0, reason="ssh: connection refused")

    run = history.run(run_id)
    assert run is not None
    assert (run.status, run.reason) == (RunStatus.FAILED, "ssh: connection refused")


def test_a_run_cannot_finish_twice(history: History) -> None:
    run_id = history.start_run(7, "schedule", T0)
    history.finish_run(run_id, RunStatus.SUCCESSFUL, T0)

    with pytest.raises(HistoryError, match="already successful"):
        history.finish_run(run_id, RunStatus.FAILED, T0)


def test_a_run_cannot_finish_as_running(history: History) -> None:
    run_id = history.start_run(7, "schedule", T0)

    with pytest.raises(ValueError, match="cannot finish"):
        history.finish_run(run_id, RunStatus.RUNNING, T0)


def test_finishing_an_unknown_run_is_an_error(history: History) -> None:
    with pytest.raises(HistoryError, match="no such run"):
        history.finish_run(99, RunStatus.FAILED, T0)


def test_logging_to_an_unknown_run_is_an_error(history: History) -> None:
    with pytest.raises(HistoryError, match="no such run"):
        history.append_log(99, "lost", T0)


def test_naive_datetimes_are_refused(history: History) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        history.start_run(7, "schedule", datetime(2024, 1, 1))


def test_datetimes_come_back_as_aware_utc(history: History) -> None:
    berlin = timezone(timedelta(hours=2))
    run_id = history.start_run(7, "schedule", datetime(2024, 6, 1, 14, 0, tzinfo=berlin))

    run = history.run(run_id)
    assert run is not None
    assert run.started_at == datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
    assert run.started_at.utcoffset() == timedelta(0)


def test_log_lines_are_timestamped_in_order(history: History) -> None:
    run_id = history.start_run(7, "schedule", T0)
    history.append_log(run_id, "connecting", T0)
    history.append_log(run_id, "dumping", T0 + timedelta(seconds=5))

    run = history.run(run_id)
    assert run is not None
    assert run.output == "2024-03-01T12:00:00Z connecting\n2024-03-01T12:00:05Z dumping\n"


def test_a_running_log_is_visible_at_once_to_another_reader(db_path: Path) -> None:
    writer = History(db_path)
    reader = History(db_path)
    try:
        run_id = writer.start_run(7, "schedule", T0)
        writer.append_log(run_id, "first line", T0)

        latest = reader.latest_run(7)
        assert latest is not None
        assert latest.status is RunStatus.RUNNING
        assert "first line" in latest.output

        writer.append_log(run_id, "second line", T0)
        again = reader.latest_run(7)
        assert again is not None
        assert "second line" in again.output
    finally:
        writer.close()
        reader.close()


def test_the_latest_run_is_the_newest_one(history: History) -> None:
    completed_run(history, 7, T0)
    newest = history.start_run(7, "manual", T0 + timedelta(hours=1))
    history.start_run(8, "schedule", T0 + timedelta(hours=2))

    latest = history.latest_run(7)
    assert latest is not None
    assert latest.id == newest


def test_runs_are_paged_newest_first_with_a_total(history: History) -> None:
    ids = [completed_run(history, 7, T0 + timedelta(hours=i)) for i in range(5)]
    history.start_run(8, "schedule", T0)

    page, total = history.runs(7, offset=1, limit=2)

    assert total == 5
    assert [run.id for run in page] == [ids[3], ids[2]]


def test_a_page_past_the_end_is_empty_but_keeps_the_total(history: History) -> None:
    history.start_run(7, "schedule", T0)

    assert history.runs(7, offset=10, limit=5) == ([], 1)


def test_runs_of_a_page_carry_their_own_output(history: History) -> None:
    first = completed_run(history, 7, T0, "one")
    second = completed_run(history, 7, T0, "two")

    page, _ = history.runs(7, 0, 10)

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
        from reconciler.history import History
        from reconciler.types import RunStatus
        t0 = datetime.fromisoformat({T0.isoformat()!r})
        history = History({str(db_path)!r})
        done = history.start_run(8, "schedule", t0)
        history.finish_run(done, RunStatus.SUCCESSFUL, t0)
        run_id = history.start_run(7, "schedule", t0)
        history.append_log(run_id, "started", t0)
        print(done, run_id, flush=True)
        os._exit(1)
        """
    )
    crashed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert crashed.returncode == 1, crashed.stderr
    done, run_id = (int(part) for part in crashed.stdout.split())

    reopened = History(db_path)
    try:
        later = T0 + timedelta(hours=1)
        recovered = reopened.recover_interrupted(later)

        assert [run.id for run in recovered] == [run_id]
        assert recovered[0].status is RunStatus.FAILED
        assert recovered[0].reason == "interrupted"
        assert recovered[0].finished_at == later
        assert "started" in recovered[0].output
        assert reopened.task_status(7) is TaskStatus.READY
        finished = reopened.run(done)
        assert finished is not None
        assert finished.status is RunStatus.SUCCESSFUL
        assert reopened.recover_interrupted(later) == []
    finally:
        reopened.close()


def test_last_run_at_is_the_start_of_each_tasks_latest_run(history: History) -> None:
    completed_run(history, 7, T0)
    history.start_run(7, "schedule", T0 + timedelta(hours=1))
    history.start_run(8, "schedule", T0 + timedelta(hours=2))

    assert history.last_run_at() == {
        7: T0 + timedelta(hours=1),
        8: T0 + timedelta(hours=2),
    }
    assert history.last_run_at([8, 9]) == {8: T0 + timedelta(hours=2)}


def test_the_last_fired_slot_replaces_the_previous_one(history: History) -> None:
    history.record_fire(7, T0)
    history.record_fire(7, T0 + timedelta(days=1))
    history.record_fire(8, T0)

    assert history.last_fired() == {7: T0 + timedelta(days=1), 8: T0}


def test_first_seen_keeps_the_first_time(history: History) -> None:
    history.mark_seen([1, 2], T0)
    history.mark_seen([2, 3], T0 + timedelta(hours=1))

    assert history.first_seen() == {1: T0, 2: T0, 3: T0 + timedelta(hours=1)}


def test_marking_ten_thousand_tasks_seen_is_fast(history: History) -> None:
    started = time.perf_counter()
    history.mark_seen(range(1, 10_001), T0)
    elapsed = time.perf_counter() - started

    assert len(history.first_seen()) == 10_000
    assert elapsed < 1.0


def test_a_token_authenticates_and_records_its_use(history: History) -> None:
    record, plaintext = history.create_token(3, "ci", ["tasks:read", "tasks:write"], T0)

    used = history.authenticate(plaintext, T0 + timedelta(minutes=1))

    assert plaintext.startswith("rk_")
    assert used is not None
    assert (used.id, used.user_id, used.name) == (record.id, 3, "ci")
    assert used.abilities == ("tasks:read", "tasks:write")
    assert used.last_used_at == T0 + timedelta(minutes=1)
    assert history.tokens(3)[0].last_used_at == T0 + timedelta(minutes=1)


@pytest.mark.parametrize("guess", ["", "rk_", "rk_wrong", "not-a-token"])
def test_a_wrong_token_does_not_authenticate(history: History, guess: str) -> None:
    history.create_token(3, "ci", ["tasks:read"], T0)

    assert history.authenticate(guess, T0) is None


def test_only_a_hash_of_the_token_is_stored(history: History, db_path: Path) -> None:
    _, plaintext = history.create_token(3, "ci", ["tasks:read"], T0)
    history.close()
    stored = b"".join(
        path.read_bytes() for path in db_path.parent.iterdir() if path.name.startswith("history")
    )

    assert b"ci" in stored
    assert plaintext.encode() not in stored
    assert plaintext[3:].encode() not in stored


def test_tokens_are_listed_per_user(history: History) -> None:
    mine, _ = history.create_token(3, "laptop", ["tasks:read"], T0)
    theirs, _ = history.create_token(4, "ci", ["tasks:read"], T0)

    assert history.tokens(3) == [mine]
    assert history.tokens() == [mine, theirs]


def test_a_revoked_token_no_longer_authenticates(history: History) -> None:
    record, plaintext = history.create_token(3, "ci", ["tasks:read"], T0)

    assert history.revoke_token(record.id) is True
    assert history.authenticate(plaintext, T0) is None
    assert history.tokens(3) == []
    assert history.revoke_token(record.id) is False


def test_task_ids_are_never_reused(db_path: Path) -> None:
    history = History(db_path)
    assert history.allocate_task_id(1) == 1
    assert history.allocate_task_id(1) == 2
    assert history.allocate_task_id(10) == 10
    assert history.allocate_task_id(5) == 11
    history.close()

    reopened = History(db_path)
    try:
        assert reopened.allocate_task_id(1) == 12
    finally:
        reopened.close()


def test_a_newer_schema_is_refused_with_a_clear_error(db_path: Path) -> None:
    raw = sqlite3.connect(db_path)
    raw.execute("PRAGMA user_version = 99")
    raw.close()

    with pytest.raises(HistoryError, match="schema version 99"):
        History(db_path)


def test_the_database_is_in_wal_mode(history: History, db_path: Path) -> None:
    raw = sqlite3.connect(db_path)
    try:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        raw.close()


def test_writes_from_many_threads_are_all_kept(history: History) -> None:
    errors: list[BaseException] = []

    def work(task_id: int) -> None:
        try:
            for i in range(20):
                run_id = history.start_run(task_id, "schedule", T0 + timedelta(seconds=i))
                history.append_log(run_id, f"line {i}", T0)
                history.finish_run(run_id, RunStatus.SUCCESSFUL, T0)
                history.allocate_task_id(1)
                history.latest_run(task_id)
        except BaseException as exc:  # collected so the main thread can fail the test
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(task_id,)) for task_id in range(1, 9)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    for task_id in range(1, 9):
        page, total = history.runs(task_id, 0, 100)
        assert total == 20
        assert all(run.status is RunStatus.SUCCESSFUL for run in page)
        assert all(
            run.output.endswith(f"line {i}\n")
            for i, run in zip(range(19, -1, -1), page, strict=True)
        )
    assert history.allocate_task_id(1) == 8 * 20 + 1
