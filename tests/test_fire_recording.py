"""The scheduler's `Fire` as the daemon wires it (`daemon.record_then_queue`): each slot is
remembered in the state store before its run is queued, and the slots of a busy minute are
remembered in one write, so the last of them are not held up by a write for each before."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import pytest

from reconciler.daemon import record_then_queue
from reconciler.models import ResolvedTask
from reconciler.state.sqlite import SqliteStateStore
from tests.test_scheduler import START, make_task


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStateStore]:
    opened = SqliteStateStore(tmp_path / "state.db")
    yield opened
    opened.close()


def test_slots_fired_together_are_remembered_in_one_write_then_queued_in_order(
    store: SqliteStateStore,
) -> None:
    writes: list[list[tuple[int, datetime]]] = []
    queued: list[tuple[int, datetime, dict[int, datetime]]] = []

    def record(fires: Sequence[tuple[int, datetime]]) -> None:
        writes.append(list(fires))
        store.schedule.record_fires(fires)

    def queue(task: ResolvedTask, slot: datetime) -> None:
        queued.append((task.id, slot, store.schedule.last_fired()))

    fires = ThreadPoolExecutor(max_workers=1)
    busy = threading.Event()
    fires.submit(busy.wait)  # the fires thread is busy while the minute's slots come
    fire = record_then_queue(record, queue, fires)
    for task_id in (3, 1, 2):
        fire(make_task(task_id), START)
    busy.set()
    fires.shutdown(wait=True)

    assert writes == [[(3, START), (1, START), (2, START)]]
    every = {1: START, 2: START, 3: START}
    assert queued == [(3, START, every), (1, START, every), (2, START, every)]


def test_a_slot_that_cannot_be_remembered_is_not_queued() -> None:
    queued: list[int] = []

    def record(fires: Sequence[tuple[int, datetime]]) -> None:
        raise OSError("disk full")

    fires = ThreadPoolExecutor(max_workers=1)
    fire = record_then_queue(record, lambda task, slot: queued.append(task.id), fires)
    fire(make_task(1), START)
    fires.shutdown(wait=True)

    assert queued == []
