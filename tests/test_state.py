"""The state store's behaviour through its interfaces, run once per implementation."""

from __future__ import annotations

import sqlite3
import threading
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from reconciler.resticcommands import BackupSummary
from reconciler.state import StateStore
from reconciler.state.errors import StateError
from reconciler.state.runs import INTERRUPTED, NEVER_STARTED, LogTail, RunInProgressError
from reconciler.state.sqlite import SqliteStateStore
from reconciler.types import RunKind, RunStatus, TaskStatus
from tests.stores import OpenStore

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


def sqlite_store(directory: Path) -> StateStore:
    return SqliteStateStore(directory / "history.sqlite3")


@pytest.fixture
def store(open_store: OpenStore) -> StateStore:
    return open_store()


def completed_run(store: StateStore, task_id: int, at: datetime, *lines: str) -> int:
    run_id = store.runs.start_run(task_id, "schedule", at)
    for line in lines:
        store.runs.append_logs(run_id, [(at, line)])
    store.runs.finish_run(run_id, RunStatus.SUCCESSFUL, at)
    return run_id


def test_a_started_run_is_running_and_so_is_its_task(store: StateStore) -> None:
    run_id = store.runs.start_run(7, "schedule", T0)

    run = store.runs.run(run_id)
    assert run is not None
    assert (run.task_id, run.status, run.trigger) == (7, RunStatus.RUNNING, "schedule")
    assert run.started_at == T0
    assert run.finished_at is None
    assert store.runs.task_status(7) is TaskStatus.RUNNING


def test_statuses_of_several_tasks_come_from_one_question(store: StateStore) -> None:
    store.runs.start_run(7, "schedule", T0)
    finished = store.runs.start_run(8, "manual", T0)
    store.runs.finish_run(finished, RunStatus.SUCCESSFUL, T0, size=1, backup_name=None, reason=None)

    assert store.runs.task_statuses([7, 8, 9]) == {
        7: TaskStatus.RUNNING,
        8: TaskStatus.READY,
        9: TaskStatus.READY,
    }


def test_a_task_with_a_run_in_progress_cannot_start_another(open_store: OpenStore) -> None:
    daemon, cli = open_store(), open_store()  # two processes sharing one store
    daemon.runs.start_run(7, "schedule", T0)
    with pytest.raises(RunInProgressError, match="task 7 is already running"):
        cli.runs.start_run(7, "cli", T0)
    assert cli.runs.start_run(8, "cli", T0) > 0
    daemon.close()
    cli.close()


def test_a_finished_run_lets_the_next_one_start(store: StateStore) -> None:
    first = store.runs.start_run(7, "schedule", T0)
    store.runs.finish_run(first, RunStatus.SUCCESSFUL, T0)
    assert store.runs.start_run(7, "manual", T0) != first


def test_a_queued_run_is_queued_and_so_is_its_task(store: StateStore) -> None:
    run_id = store.runs.queue_run(7, "schedule", T0)

    run = store.runs.run(run_id)
    assert run is not None
    assert (run.status, run.finished_at) == (RunStatus.QUEUED, None)
    assert store.runs.task_statuses([7, 8]) == {7: TaskStatus.QUEUED, 8: TaskStatus.READY}


def test_a_task_with_a_queued_run_cannot_queue_or_start_another(open_store: OpenStore) -> None:
    daemon, cli = open_store(), open_store()
    daemon.runs.queue_run(7, "schedule", T0)
    with pytest.raises(RunInProgressError):
        cli.runs.start_run(7, "cli", T0)
    with pytest.raises(RunInProgressError):
        cli.runs.queue_run(7, "cli", T0)
    daemon.runs.start_run(8, "schedule", T0)
    with pytest.raises(RunInProgressError):
        cli.runs.queue_run(8, "cli", T0)


def test_a_queued_run_that_begins_is_running_from_then(store: StateStore) -> None:
    run_id = store.runs.queue_run(7, "schedule", T0)
    store.runs.begin_run(run_id, T0 + timedelta(minutes=3))

    run = store.runs.run(run_id)
    assert run is not None
    assert (run.status, run.started_at) == (RunStatus.RUNNING, T0 + timedelta(minutes=3))
    assert store.runs.last_run_at([7]) == {7: T0 + timedelta(minutes=3)}
    assert store.runs.task_status(7) is TaskStatus.RUNNING


def test_only_a_queued_run_can_begin(store: StateStore) -> None:
    running = store.runs.start_run(7, "schedule", T0)
    with pytest.raises(StateError, match=f"cannot start run {running}: it is running"):
        store.runs.begin_run(running, T0)
    with pytest.raises(StateError, match="no such run"):
        store.runs.begin_run(999, T0)


def test_a_queued_run_can_end_without_starting(store: StateStore) -> None:
    run_id = store.runs.queue_run(7, "schedule", T0)
    store.runs.finish_run(run_id, RunStatus.FAILED, T0, reason="cancelled")

    assert store.runs.task_status(7) is TaskStatus.READY
    with pytest.raises(ValueError, match="cannot finish"):
        store.runs.finish_run(store.runs.queue_run(7, "schedule", T0), RunStatus.QUEUED, T0)


def test_recovery_ends_queued_runs_as_never_started_and_running_ones_as_interrupted(
    store: StateStore,
) -> None:
    running = store.runs.start_run(7, "schedule", T0)
    queued = store.runs.queue_run(8, "schedule", T0)

    recovered = store.runs.recover_interrupted(T0 + timedelta(hours=1))

    assert [(run.id, run.status, run.reason) for run in recovered] == [
        (running, RunStatus.FAILED, INTERRUPTED),
        (queued, RunStatus.FAILED, NEVER_STARTED),
    ]
    assert recovered[1].output.endswith(f"{NEVER_STARTED}\n")
    assert store.runs.task_statuses([7, 8]) == {7: TaskStatus.READY, 8: TaskStatus.READY}


def test_pruning_never_deletes_a_queued_run(store: StateStore) -> None:
    for hour in range(3):
        completed_run(store, 7, T0 + timedelta(hours=hour))
    queued = store.runs.queue_run(7, "schedule", T0 - timedelta(days=1))

    store.runs.prune_runs(7, keep=1, started_before=T0 + timedelta(days=1))

    assert [run.id for run in store.runs.page(7, 0, 10)[0]] == [queued]


def test_a_task_never_run_is_ready(store: StateStore) -> None:
    assert store.runs.task_status(1) is TaskStatus.READY
    assert store.runs.latest_run(1) is None
    assert store.runs.run(1) is None


def test_finishing_a_run_records_its_outcome_and_readies_the_task(store: StateStore) -> None:
    run_id = store.runs.start_run(7, "manual", T0)
    store.runs.finish_run(
        run_id,
        RunStatus.SUCCESSFUL,
        T0 + timedelta(minutes=3),
        size=1234,
        backup_name="db-2024.tar.zst",
    )

    run = store.runs.run(run_id)
    assert run is not None
    assert run.status is RunStatus.SUCCESSFUL
    assert run.finished_at == T0 + timedelta(minutes=3)
    assert (run.size, run.backup_name, run.reason) == (1234, "db-2024.tar.zst", None)
    assert store.runs.task_status(7) is TaskStatus.READY


def test_a_failed_run_keeps_its_reason(store: StateStore) -> None:
    run_id = store.runs.start_run(7, "schedule", T0)
    store.runs.finish_run(run_id, RunStatus.FAILED, T0, reason="ssh: connection refused")

    run = store.runs.run(run_id)
    assert run is not None
    assert (run.status, run.reason) == (RunStatus.FAILED, "ssh: connection refused")


def test_a_run_cannot_finish_twice(store: StateStore) -> None:
    run_id = store.runs.start_run(7, "schedule", T0)
    store.runs.finish_run(run_id, RunStatus.SUCCESSFUL, T0)

    with pytest.raises(StateError, match="already successful"):
        store.runs.finish_run(run_id, RunStatus.FAILED, T0)


def test_a_run_cannot_finish_as_running(store: StateStore) -> None:
    run_id = store.runs.start_run(7, "schedule", T0)

    with pytest.raises(ValueError, match="cannot finish"):
        store.runs.finish_run(run_id, RunStatus.RUNNING, T0)


def test_finishing_an_unknown_run_is_an_error(store: StateStore) -> None:
    with pytest.raises(StateError, match="no such run"):
        store.runs.finish_run(99, RunStatus.FAILED, T0)


def test_logging_to_an_unknown_run_is_an_error(store: StateStore) -> None:
    with pytest.raises(StateError, match="no such run"):
        store.runs.append_logs(99, [(T0, "lost")])


def test_naive_datetimes_are_refused(store: StateStore) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        store.runs.start_run(7, "schedule", datetime(2024, 1, 1))


def test_datetimes_come_back_as_aware_utc(store: StateStore) -> None:
    berlin = timezone(timedelta(hours=2))
    run_id = store.runs.start_run(7, "schedule", datetime(2024, 6, 1, 14, 0, tzinfo=berlin))

    run = store.runs.run(run_id)
    assert run is not None
    assert run.started_at == datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
    assert run.started_at.utcoffset() == timedelta(0)


def test_log_lines_are_timestamped_in_order(store: StateStore) -> None:
    run_id = store.runs.start_run(7, "schedule", T0)
    store.runs.append_logs(run_id, [(T0, "connecting")])
    store.runs.append_logs(run_id, [(T0 + timedelta(seconds=5), "dumping")])

    run = store.runs.run(run_id)
    assert run is not None
    assert run.output == "2024-03-01T12:00:00Z connecting\n2024-03-01T12:00:05Z dumping\n"


def test_a_running_log_is_visible_at_once_to_another_reader(open_store: OpenStore) -> None:
    writer = open_store()
    reader = open_store()
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


def test_the_latest_run_is_the_newest_one(store: StateStore) -> None:
    completed_run(store, 7, T0)
    newest = store.runs.start_run(7, "manual", T0 + timedelta(hours=1))
    store.runs.start_run(8, "schedule", T0 + timedelta(hours=2))

    latest = store.runs.latest_run(7)
    assert latest is not None
    assert latest.id == newest


def test_runs_are_paged_newest_first_with_a_total(store: StateStore) -> None:
    ids = [completed_run(store, 7, T0 + timedelta(hours=i)) for i in range(5)]
    store.runs.start_run(8, "schedule", T0)

    page, total = store.runs.page(7, offset=1, limit=2)

    assert total == 5
    assert [run.id for run in page] == [ids[3], ids[2]]


def test_a_page_past_the_end_is_empty_but_keeps_the_total(store: StateStore) -> None:
    store.runs.start_run(7, "schedule", T0)

    assert store.runs.page(7, offset=10, limit=5) == ([], 1)


def test_runs_of_a_page_carry_their_own_output(store: StateStore) -> None:
    first = completed_run(store, 7, T0, "one")
    second = completed_run(store, 7, T0, "two")

    page, _ = store.runs.page(7, 0, 10)

    assert {run.id: run.output for run in page} == {
        first: "2024-03-01T12:00:00Z one\n",
        second: "2024-03-01T12:00:00Z two\n",
    }


def test_last_run_at_is_the_start_of_each_tasks_latest_run(store: StateStore) -> None:
    completed_run(store, 7, T0)
    store.runs.start_run(7, "schedule", T0 + timedelta(hours=1))
    store.runs.start_run(8, "schedule", T0 + timedelta(hours=2))

    assert store.runs.last_run_at() == {
        7: T0 + timedelta(hours=1),
        8: T0 + timedelta(hours=2),
    }
    assert store.runs.last_run_at([8, 9]) == {8: T0 + timedelta(hours=2)}


def ended_run(store: StateStore, task_id: int, status: RunStatus, at: datetime) -> int:
    run_id = store.runs.start_run(task_id, "schedule", at)
    store.runs.finish_run(run_id, status, at + timedelta(minutes=1), size=len(status.value))
    return run_id


def test_the_statuses_before_a_run_are_the_tasks_older_runs_newest_first(
    store: StateStore,
) -> None:
    ok, failed = RunStatus.SUCCESSFUL, RunStatus.FAILED
    ended_run(store, 1, ok, T0)
    ended_run(store, 2, ok, T0)
    ended_run(store, 1, failed, T0 + timedelta(hours=1))
    ended_run(store, 1, failed, T0 + timedelta(hours=2))
    current = ended_run(store, 1, ok, T0 + timedelta(hours=3))
    assert store.runs.statuses_before(1, current, 10) == [failed, failed, ok]
    assert store.runs.statuses_before(1, current, 2) == [failed, failed]
    assert store.runs.statuses_before(3, current, 10) == []


def test_the_last_success_of_each_task_is_its_newest_successful_run(store: StateStore) -> None:
    ended_run(store, 1, RunStatus.SUCCESSFUL, T0)
    ended_run(store, 1, RunStatus.SUCCESSFUL, T0 + timedelta(hours=1))
    ended_run(store, 1, RunStatus.FAILED, T0 + timedelta(hours=2))
    ended_run(store, 2, RunStatus.FAILED, T0)
    last = store.runs.last_successes([1, 2, 3])
    assert set(last) == {1}
    assert last[1].finished_at == T0 + timedelta(hours=1, minutes=1)
    assert last[1].size == len("successful")


def test_the_last_fired_slot_replaces_the_previous_one(store: StateStore) -> None:
    store.schedule.record_fires([(7, T0)])
    store.schedule.record_fires([(7, T0 + timedelta(days=1)), (8, T0)])

    assert store.schedule.last_fired() == {7: T0 + timedelta(days=1), 8: T0}


def test_first_seen_keeps_the_first_time(store: StateStore) -> None:
    store.schedule.mark_seen([1, 2], T0)
    store.schedule.mark_seen([2, 3], T0 + timedelta(hours=1))

    assert store.schedule.first_seen() == {1: T0, 2: T0, 3: T0 + timedelta(hours=1)}


def test_marking_ten_thousand_tasks_seen_keeps_each_first_time(store: StateStore) -> None:
    """Its speed is measured by bench/bench_core.py (`mark_seen_10000_ms`)."""
    store.schedule.mark_seen(range(1, 5_001), T0)
    store.schedule.mark_seen(range(1, 10_001), T0 + timedelta(hours=1))

    seen = store.schedule.first_seen()
    assert len(seen) == 10_000
    assert seen[5_000] == T0
    assert seen[5_001] == T0 + timedelta(hours=1)


def test_a_token_is_found_by_its_plaintext_and_records_its_use(store: StateStore) -> None:
    record, plaintext = store.tokens.create_token(3, "ci", ["tasks:read", "tasks:write"], T0)

    found = store.tokens.find(plaintext)
    store.tokens.record_uses({record.id: T0 + timedelta(minutes=1)})

    assert plaintext.startswith("rk_")
    assert found is not None
    assert (found.id, found.user_id, found.name) == (record.id, 3, "ci")
    assert found.abilities == ("tasks:read", "tasks:write")
    assert found.last_used_at is None
    assert store.tokens.list(3)[0].last_used_at == T0 + timedelta(minutes=1)


def test_a_tokens_recorded_use_only_moves_forward(store: StateStore) -> None:
    record, _ = store.tokens.create_token(3, "ci", ["tasks:read"], T0)

    store.tokens.record_uses({record.id: T0 + timedelta(minutes=2)})
    store.tokens.record_uses({record.id: T0 + timedelta(minutes=1)})

    assert store.tokens.list(3)[0].last_used_at == T0 + timedelta(minutes=2)


def test_recording_the_use_of_a_revoked_token_leaves_it_revoked(store: StateStore) -> None:
    record, plaintext = store.tokens.create_token(3, "ci", ["tasks:read"], T0)
    store.tokens.revoke_token(record.id)

    store.tokens.record_uses({record.id: T0})

    assert store.tokens.find(plaintext) is None
    assert store.tokens.list(3) == []


@pytest.mark.parametrize("guess", ["", "rk_", "rk_wrong", "not-a-token"])
def test_a_wrong_token_does_not_authenticate(store: StateStore, guess: str) -> None:
    store.tokens.create_token(3, "ci", ["tasks:read"], T0)

    assert store.tokens.find(guess) is None


def test_tokens_are_listed_per_user(store: StateStore) -> None:
    mine, _ = store.tokens.create_token(3, "laptop", ["tasks:read"], T0)
    theirs, _ = store.tokens.create_token(4, "ci", ["tasks:read"], T0)

    assert store.tokens.list(3) == [mine]
    assert store.tokens.list() == [mine, theirs]


def test_a_revoked_token_no_longer_authenticates(store: StateStore) -> None:
    record, plaintext = store.tokens.create_token(3, "ci", ["tasks:read"], T0)

    assert store.tokens.revoke_token(record.id) is True
    assert store.tokens.find(plaintext) is None
    assert store.tokens.list(3) == []
    assert store.tokens.revoke_token(record.id) is False


def test_the_highest_recorded_task_id_is_kept_across_restarts(open_store: OpenStore) -> None:
    store = open_store()
    assert store.task_id_counter.highest_task_id() == 0
    store.task_id_counter.record_task_id(10)
    store.task_id_counter.record_task_id(5)
    store.close()

    reopened = open_store()
    try:
        assert reopened.task_id_counter.highest_task_id() == 10
    finally:
        reopened.close()


def test_writes_from_many_threads_are_all_kept(store: StateStore) -> None:
    errors: list[BaseException] = []

    def work(task_id: int) -> None:
        try:
            for i in range(20):
                run_id = store.runs.start_run(task_id, "schedule", T0 + timedelta(seconds=i))
                store.runs.append_logs(run_id, [(T0, f"line {i}")])
                store.runs.finish_run(run_id, RunStatus.SUCCESSFUL, T0)
                store.task_id_counter.record_task_id(task_id * 100 + i)
                store.runs.latest_run(task_id)
        except BaseException as exc:  # collected so the main thread can fail the test
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(task_id,)) for task_id in range(1, 9)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    for task_id in range(1, 9):
        page, total = store.runs.page(task_id, 0, 100)
        assert total == 20
        assert all(run.status is RunStatus.SUCCESSFUL for run in page)
        assert all(
            run.output.endswith(f"line {i}\n")
            for i, run in zip(range(19, -1, -1), page, strict=True)
        )
    assert store.task_id_counter.highest_task_id() == 819


def test_log_lines_are_written_in_one_batch_and_read_back_after_an_offset(
    store: StateStore,
) -> None:
    run_id = store.runs.start_run(7, "schedule", T0)
    store.runs.append_logs(run_id, [(T0, "one"), (T0, "two")])
    store.runs.append_logs(run_id, [(T0, "three")])

    assert store.runs.log_after(run_id, 0) == (
        ["2024-03-01T12:00:00Z one", "2024-03-01T12:00:00Z two", "2024-03-01T12:00:00Z three"],
        3,
    )
    assert store.runs.log_after(run_id, 1) == (
        ["2024-03-01T12:00:00Z two", "2024-03-01T12:00:00Z three"],
        3,
    )
    assert store.runs.log_after(run_id, 3) == ([], 3)
    assert store.runs.log_after(run_id, 0, limit=1) == (["2024-03-01T12:00:00Z one"], 1)


def test_a_log_line_holding_a_newline_stays_one_line(store: StateStore) -> None:
    run_id = store.runs.start_run(7, "schedule", T0)
    store.runs.append_logs(run_id, [(T0, "failed: first\nsecond")])
    assert store.runs.log_after(run_id, 0) == (["2024-03-01T12:00:00Z failed: first\\nsecond"], 1)


def test_a_run_is_read_with_only_the_tail_of_its_log(store: StateStore) -> None:
    run_id = store.runs.start_run(7, "schedule", T0)
    for batch in range(10):
        store.runs.append_logs(run_id, [(T0, f"{batch}.{i}") for i in range(100)])
    run = store.runs.run(run_id, LogTail(lines=150, chars=1 << 20))
    assert run is not None
    lines = run.output.splitlines()
    assert lines[0] == "[850 earlier lines not shown]"
    assert lines[1] == "2024-03-01T12:00:00Z 8.50"
    assert lines[-1] == "2024-03-01T12:00:00Z 9.99"


def test_alive_intervals_are_extended_by_the_heartbeat_and_old_ones_forgotten(
    store: StateStore,
) -> None:
    first = store.schedule.begin_alive(T0, forget_before=T0)
    store.schedule.still_alive(first, T0 + timedelta(hours=1))
    second = store.schedule.begin_alive(
        T0 + timedelta(hours=3), forget_before=T0 + timedelta(hours=2)
    )
    store.schedule.still_alive(second, T0 + timedelta(hours=4))

    assert store.schedule.alive_since(T0) == [(T0 + timedelta(hours=3), T0 + timedelta(hours=4))]
    third = store.schedule.begin_alive(T0 + timedelta(hours=5), forget_before=T0)
    assert store.schedule.alive_since(T0 + timedelta(hours=4)) == [
        (T0 + timedelta(hours=3), T0 + timedelta(hours=4)),
        (T0 + timedelta(hours=5), T0 + timedelta(hours=5)),
    ]
    assert third != second


def test_the_change_marker_moves_when_another_handle_writes(open_store: OpenStore) -> None:
    store, other = open_store(), open_store()
    before = store.changes.current()

    other.runs.start_run(7, "cli", T0)

    assert before is not None
    # SQLite's marker moves at the commit; PostgreSQL's when the commit's NOTIFY arrives.
    deadline = time.monotonic() + 5
    while store.changes.current() in (None, before) and time.monotonic() < deadline:
        time.sleep(0.001)
    assert store.changes.current() not in (None, before)


def test_the_change_marker_moves_when_its_own_handle_writes(store: StateStore) -> None:
    record, _ = store.tokens.create_token(1, "t", ["*"], T0)
    before = store.changes.current()

    store.tokens.revoke_token(record.id)

    assert store.changes.current() not in (None, before)


def test_the_change_marker_stays_while_the_store_is_only_read(open_store: OpenStore) -> None:
    store, other = open_store(), open_store()
    completed_run(store, 7, T0, "line")
    before = store.changes.current()

    other.runs.latest_run(7)
    store.runs.task_statuses([7])
    other.tokens.find("rk_unknown")

    assert store.changes.current() == before


def test_a_closed_stores_change_marker_cannot_tell(open_store: OpenStore) -> None:
    store = open_store()
    store.close()

    assert store.changes.current() is None


def test_the_sqlite_change_marker_moves_with_a_write_after_the_wal_was_truncated(
    tmp_path: Path,
) -> None:
    store = sqlite_store(tmp_path)
    try:
        completed_run(store, 7, T0)
        direct = sqlite3.connect(tmp_path / "history.sqlite3")
        try:
            direct.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            direct.close()
        before = store.changes.current()

        # The first write after a truncated WAL starts it afresh, from frame 1 again.
        completed_run(store, 8, T0)

        assert store.changes.current() not in (None, before)
    finally:
        store.close()


def test_a_finished_run_keeps_the_size_and_sha256_of_its_backup(store: StateStore) -> None:
    run_id = store.runs.start_run(7, "schedule", T0)
    digest = "ab" * 32
    store.runs.finish_run(
        run_id, RunStatus.SUCCESSFUL, T0, size=1234, backup_name="backup_7_x.tar", sha256=digest
    )

    run = store.runs.run(run_id)
    assert run is not None
    assert (run.size, run.sha256) == (1234, digest)


def test_a_run_finished_without_a_checksum_has_none(store: StateStore) -> None:
    run_id = store.runs.start_run(7, "schedule", T0)
    store.runs.finish_run(run_id, RunStatus.FAILED, T0, reason="connection refused")

    run = store.runs.run(run_id)
    assert run is not None
    assert run.sha256 is None


def test_a_finished_run_keeps_restics_summary_of_its_snapshot(store: StateStore) -> None:
    run_id = store.runs.start_run(7, "schedule", T0)
    # Byte counts past 2**32: a 64-bit column holds them.
    summary = BackupSummary("4982ee51" + "ab" * 28, 5_000_000_000, 12_000_000_000)
    store.runs.finish_run(run_id, RunStatus.SUCCESSFUL, T0, size=1234, snapshot=summary)

    run = store.runs.run(run_id)
    assert run is not None
    assert run.snapshot == summary


def test_a_run_finished_without_a_restic_snapshot_has_none(store: StateStore) -> None:
    run_id = store.runs.start_run(7, "schedule", T0)
    store.runs.finish_run(run_id, RunStatus.SUCCESSFUL, T0, size=1234, sha256="ab" * 32)

    run = store.runs.run(run_id)
    assert run is not None
    assert run.snapshot is None


def test_a_run_is_a_backup_unless_started_as_another_kind(store: StateStore) -> None:
    backup = store.runs.start_run(7, "schedule", T0)
    store.runs.finish_run(backup, RunStatus.SUCCESSFUL, T0)
    drill = store.runs.queue_run(7, "schedule", T0, RunKind.VERIFY)

    assert [run.kind for run in store.runs.page(7, 0, 10)[0]] == [RunKind.VERIFY, RunKind.BACKUP]
    assert [run.kind for run in store.runs.recent_runs([7], T0)[7]] == [RunKind.BACKUP]
    assert [run.id for run in store.runs.recent_runs([7], T0, RunKind.VERIFY)[7]] == [drill]


def test_a_drill_and_a_backup_of_one_task_are_never_unfinished_together(
    store: StateStore,
) -> None:
    store.runs.start_run(7, "schedule", T0, RunKind.VERIFY)
    with pytest.raises(RunInProgressError):
        store.runs.start_run(7, "schedule", T0)


def test_last_runs_streaks_and_successes_are_counted_per_kind(store: StateStore) -> None:
    ended_run(store, 1, RunStatus.SUCCESSFUL, T0)
    drill = store.runs.start_run(1, "schedule", T0 + timedelta(hours=1), RunKind.VERIFY)
    store.runs.finish_run(drill, RunStatus.FAILED, T0 + timedelta(hours=1, minutes=1))
    current = ended_run(store, 1, RunStatus.SUCCESSFUL, T0 + timedelta(hours=2))
    verified = store.runs.start_run(1, "schedule", T0 + timedelta(hours=3), RunKind.VERIFY)
    store.runs.finish_run(verified, RunStatus.SUCCESSFUL, T0 + timedelta(hours=3, minutes=1))

    assert store.runs.last_run_at([1]) == {1: T0 + timedelta(hours=2)}
    assert store.runs.last_run_at([1], RunKind.VERIFY) == {1: T0 + timedelta(hours=3)}
    assert store.runs.statuses_before(1, current, 10) == [RunStatus.SUCCESSFUL]
    assert store.runs.statuses_before(1, verified, 10, RunKind.VERIFY) == [RunStatus.FAILED]
    assert store.runs.last_successes([1])[1].finished_at == T0 + timedelta(hours=2, minutes=1)
    last_drill = store.runs.last_successes([1], RunKind.VERIFY)[1]
    assert last_drill.finished_at == T0 + timedelta(hours=3, minutes=1)
