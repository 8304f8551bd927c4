"""The scheduler: entries, fire times, catch-up, and the asyncio loop, on a fake clock."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from reconciler.cron import next_fire, previous_fire
from reconciler.models import (
    BackupTask,
    Frequency,
    LocalDestination,
    RemoteServer,
    ResolvedTask,
    Schedule,
    Source,
    SourceType,
    User,
    Verify,
    Weekday,
)
from reconciler.scheduler import Scheduler, drill_schedule
from tests.clock import FakeClock

OWNER = User(id=1, name="Ada Lovelace", email="ada@example.com")
SERVER = RemoteServer(id=1, user_id=1, label="This machine", host="127.0.0.1")
DESTINATION = LocalDestination(id=1, user_id=1, label="Disk", type="local", path="/srv/backups")
START = datetime(2024, 6, 1, 9, 0, tzinfo=UTC)  # a Saturday
WAIT = 5.0  # seconds; an upper bound for things that should happen at once


def daily(at: str, zone: str = "UTC") -> Schedule:
    return Schedule(frequency=Frequency.DAILY, time=at, timezone=zone)


def make_task(
    task_id: int = 1,
    schedule: Schedule | None = None,
    *,
    paused: bool = False,
    label: str = "Home directories",
) -> ResolvedTask:
    task = BackupTask(
        id=task_id,
        user_id=1,
        label=label,
        remote_server_id=1,
        backup_destination_id=1,
        source=Source(type=SourceType.FILES, path="/home"),
        schedule=schedule or daily("10:00"),
        paused=paused,
    )
    return ResolvedTask(task=task, owner=OWNER, server=SERVER, destination=DESTINATION)


def at(hour: int, minute: int = 0, *, day: int = 1) -> datetime:
    return datetime(2024, 6, day, hour, minute, tzinfo=UTC)


def ignore(task: ResolvedTask, slot: datetime) -> None:
    raise AssertionError(f"nothing should fire here, got task {task.id} at {slot}")


def scheduler_with(*tasks: ResolvedTask, now: datetime = START) -> Scheduler:
    scheduler = Scheduler(FakeClock(now), ignore)
    for task in tasks:
        scheduler.upsert(task, now)
    return scheduler


def fired(pairs: list[tuple[ResolvedTask, datetime]]) -> list[tuple[int, datetime]]:
    return [(task.id, slot) for task, slot in pairs]


# --- entries --------------------------------------------------------------------------------


def test_an_added_task_is_due_at_its_next_slot() -> None:
    scheduler = scheduler_with(make_task())
    assert scheduler.next_fire(1) == at(10)
    assert scheduler.pop_due(at(9, 59)) == []
    assert fired(scheduler.pop_due(at(10))) == [(1, at(10))]


def test_a_fired_task_is_rescheduled_to_its_next_slot() -> None:
    scheduler = scheduler_with(make_task())
    scheduler.pop_due(at(10))
    assert scheduler.next_fire(1) == at(10, day=2)
    assert scheduler.pop_due(at(10)) == []


def test_tasks_shows_every_entry_read_only() -> None:
    first, second = make_task(1), make_task(2, paused=True)
    scheduler = scheduler_with(first, second)
    assert dict(scheduler.tasks) == {1: first, 2: second}
    with pytest.raises(TypeError):
        scheduler.tasks[3] = first  # type: ignore[index]


def test_a_removed_task_is_never_fired() -> None:
    scheduler = scheduler_with(make_task(1), make_task(2))
    scheduler.remove(1)
    assert 1 not in scheduler.tasks
    assert scheduler.next_fire(1) is None
    assert fired(scheduler.pop_due(at(10))) == [(2, at(10))]


def test_removing_an_unknown_task_is_harmless() -> None:
    scheduler = scheduler_with(make_task(1))
    scheduler.remove(99)
    assert list(scheduler.tasks) == [1]


def test_an_update_replaces_the_task_snapshot() -> None:
    scheduler = scheduler_with(make_task(label="old"))
    scheduler.upsert(make_task(label="new"), at(9, 30))
    assert scheduler.tasks[1].task.label == "new"
    assert [task.task.label for task, _ in scheduler.pop_due(at(10))] == ["new"]


# --- paused ---------------------------------------------------------------------------------


def test_a_paused_task_is_kept_but_never_fired() -> None:
    scheduler = scheduler_with(make_task(paused=True))
    assert 1 in scheduler.tasks
    assert scheduler.next_fire(1) is None
    assert scheduler.upcoming() == []
    assert scheduler.pop_due(at(10, day=9)) == []


def test_pausing_a_task_cancels_its_pending_fire() -> None:
    scheduler = scheduler_with(make_task())
    scheduler.upsert(make_task(paused=True), at(9, 30))
    assert scheduler.next_fire(1) is None
    assert scheduler.pop_due(at(10)) == []


def test_a_paused_task_is_not_caught_up() -> None:
    scheduler = scheduler_with(make_task(paused=True), now=at(10, 30))
    last_fired = {1: at(10) - timedelta(days=1)}
    assert scheduler.catch_up(last_fired, at(10, 30), timedelta(hours=1)) == []


def test_unpausing_a_task_schedules_its_next_slot_after_now() -> None:
    scheduler = scheduler_with(make_task(paused=True))
    scheduler.upsert(make_task(), at(10, 30))
    assert scheduler.next_fire(1) == at(10, day=2)


# --- updates and schedule changes -----------------------------------------------------------


def test_an_update_with_the_same_schedule_keeps_the_pending_fire_time() -> None:
    scheduler = scheduler_with(make_task())
    scheduler.upsert(make_task(label="renamed"), at(9, 59))
    assert scheduler.next_fire(1) == at(10)


def test_a_schedule_change_takes_effect_from_now() -> None:
    scheduler = scheduler_with(make_task())
    scheduler.upsert(make_task(schedule=daily("09:45")), at(9, 30))
    assert scheduler.next_fire(1) == at(9, 45)
    scheduler.upsert(make_task(schedule=daily("09:15")), at(9, 30))
    assert scheduler.next_fire(1) == at(9, 15, day=2)


def test_a_schedule_change_mid_way_moves_a_task_among_others() -> None:
    scheduler = scheduler_with(make_task(1, daily("10:00")), make_task(2, daily("11:00")))
    scheduler.upsert(make_task(1, daily("12:00")), at(9, 30))
    assert fired(scheduler.upcoming()) == [(2, at(11)), (1, at(12))]
    assert fired(scheduler.pop_due(at(12))) == [(2, at(11)), (1, at(12))]


def test_an_update_at_the_fire_time_before_it_fired_runs_it_once() -> None:
    scheduler = scheduler_with(make_task())
    scheduler.upsert(make_task(label="renamed"), at(10))
    assert fired(scheduler.pop_due(at(10))) == [(1, at(10))]
    assert scheduler.pop_due(at(10)) == []


def test_a_schedule_change_at_the_fire_time_does_not_run_the_slot_again() -> None:
    scheduler = scheduler_with(make_task())
    scheduler.pop_due(at(10))
    same_slots = Schedule(custom_cron="0 10 * * *")
    scheduler.upsert(make_task(schedule=same_slots), at(10))
    assert scheduler.next_fire(1) == at(10, day=2)


def test_a_schedule_change_never_repeats_a_fired_slot_even_if_the_clock_went_back() -> None:
    scheduler = scheduler_with(make_task())
    scheduler.pop_due(at(10))
    scheduler.upsert(make_task(schedule=Schedule(custom_cron="0 10 * * *")), at(9, 58))
    assert scheduler.next_fire(1) == at(10, day=2)


def test_a_removed_and_re_added_task_does_not_repeat_its_last_slot() -> None:
    scheduler = scheduler_with(make_task())
    scheduler.pop_due(at(10))
    scheduler.remove(1)
    scheduler.upsert(make_task(), at(9, 59))
    assert scheduler.next_fire(1) == at(10, day=2)


def test_a_task_whose_cron_never_fires_is_kept_without_a_fire_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    scheduler = scheduler_with(make_task(schedule=Schedule(custom_cron="0 0 30 2 *")))
    assert 1 in scheduler.tasks
    assert scheduler.next_fire(1) is None
    assert "never fires" in caplog.text


# --- missed runs ----------------------------------------------------------------------------


def test_a_task_that_missed_several_slots_fires_once_with_its_latest_slot() -> None:
    scheduler = scheduler_with(make_task())
    assert fired(scheduler.pop_due(at(12, day=4))) == [(1, at(10, day=4))]
    assert scheduler.next_fire(1) == at(10, day=5)


def test_catch_up_runs_a_missed_slot_once() -> None:
    scheduler = scheduler_with(make_task(), now=at(10, 30))
    last_fired = {1: at(10) - timedelta(days=3)}
    caught = scheduler.catch_up(last_fired, at(10, 30), timedelta(hours=1))
    assert fired(caught) == [(1, at(10))]
    assert scheduler.catch_up(last_fired, at(10, 30), timedelta(hours=1)) == []
    assert scheduler.pop_due(at(10, 30)) == []
    assert scheduler.next_fire(1) == at(10, day=2)


def test_catch_up_does_not_double_a_slot_the_heap_also_holds() -> None:
    scheduler = scheduler_with(make_task(), now=at(9))  # entry due at 10:00
    assert fired(scheduler.catch_up({1: at(9)}, at(10, 30), timedelta(hours=1))) == [(1, at(10))]
    assert scheduler.pop_due(at(10, 30)) == []


def test_catch_up_ignores_slots_older_than_the_deadline() -> None:
    scheduler = scheduler_with(make_task(), now=at(12))
    assert scheduler.catch_up({1: at(10) - timedelta(days=1)}, at(12), timedelta(hours=1)) == []


def test_catch_up_ignores_a_task_that_already_ran_its_latest_slot() -> None:
    scheduler = scheduler_with(make_task(), now=at(10, 30))
    assert scheduler.catch_up({1: at(10)}, at(10, 30), timedelta(hours=1)) == []


def test_catch_up_ignores_a_task_that_never_ran() -> None:
    scheduler = scheduler_with(make_task(), now=at(10, 30))
    assert scheduler.catch_up({}, at(10, 30), timedelta(hours=1)) == []


def test_catch_up_lists_missed_slots_oldest_first() -> None:
    early, late = make_task(2, daily("10:00")), make_task(1, daily("10:15"))
    scheduler = scheduler_with(early, late, now=at(10, 30))
    last = {1: at(9), 2: at(9)}
    assert fired(scheduler.catch_up(last, at(10, 30), timedelta(hours=1))) == [
        (2, at(10)),
        (1, at(10, 15)),
    ]


def test_catch_up_skips_a_slot_a_daemon_was_alive_for() -> None:
    scheduler = scheduler_with(make_task(), now=at(10, 30))
    alive = [(at(9, 50), at(10, 5))]
    assert scheduler.catch_up({1: at(9)}, at(10, 30), timedelta(hours=1), alive) == []


def test_catch_up_runs_a_slot_that_fell_between_two_daemons() -> None:
    scheduler = scheduler_with(make_task(), now=at(10, 30))
    alive = [(at(9), at(9, 59)), (at(10, 1), at(10, 29))]
    caught = scheduler.catch_up({1: at(9)}, at(10, 30), timedelta(hours=1), alive)
    assert fired(caught) == [(1, at(10))]


# --- upcoming -------------------------------------------------------------------------------


def test_upcoming_lists_the_soonest_first_with_ties_by_task_id() -> None:
    scheduler = scheduler_with(
        make_task(3, daily("11:00")), make_task(2, daily("10:00")), make_task(1, daily("11:00"))
    )
    assert fired(scheduler.upcoming()) == [(2, at(10)), (1, at(11)), (3, at(11))]
    assert fired(scheduler.upcoming(limit=2)) == [(2, at(10)), (1, at(11))]
    assert fired(scheduler.upcoming([3, 2, 99])) == [(2, at(10)), (3, at(11))]


# --- the run loop ---------------------------------------------------------------------------


class CountingClock(FakeClock):
    """Counts how often the scheduler looks at the time, to tell sleeping from polling."""

    def __init__(self, start: datetime) -> None:
        super().__init__(start)
        self.reads = 0

    def now(self) -> datetime:
        self.reads += 1
        return super().now()


def run_loop(scheduler: Scheduler, scenario: Callable[[], Awaitable[None]]) -> None:
    async def main() -> None:
        loop = asyncio.create_task(scheduler.run())
        try:
            await asyncio.wait_for(scenario(), WAIT)
        finally:
            loop.cancel()
            with pytest.raises(asyncio.CancelledError):
                await loop

    asyncio.run(main())


class Recorder:
    """A fire callback that records runs and lets a test await the next one."""

    def __init__(self) -> None:
        self.runs: list[tuple[int, datetime]] = []
        self._arrived = asyncio.Event()

    def __call__(self, task: ResolvedTask, slot: datetime) -> None:
        self.runs.append((task.id, slot))
        self._arrived.set()

    async def next_run(self) -> None:
        await self._arrived.wait()
        self._arrived.clear()


def test_the_loop_fires_a_task_when_its_time_comes() -> None:
    clock = FakeClock(START)
    recorder = Recorder()
    scheduler = Scheduler(clock, recorder)
    scheduler.upsert(make_task(), clock.now())

    async def scenario() -> None:
        clock.advance(timedelta(hours=1))
        scheduler.wake()
        await recorder.next_run()
        assert recorder.runs == [(1, at(10))]

    run_loop(scheduler, scenario)


def test_the_loop_fires_entries_due_at_once_in_the_given_fire_order() -> None:
    clock = FakeClock(START)
    recorder = Recorder()
    scheduler = Scheduler(clock, recorder, fire_order=lambda due: list(reversed(due)))
    for task_id in (1, 2, 3):
        scheduler.upsert(make_task(task_id), clock.now())

    async def scenario() -> None:
        clock.advance(timedelta(hours=1))
        scheduler.wake()
        while len(recorder.runs) < 3:
            await recorder.next_run()
        assert recorder.runs == [(3, at(10)), (2, at(10)), (1, at(10))]

    run_loop(scheduler, scenario)


def test_the_loop_does_not_fire_before_the_fire_time() -> None:
    clock = FakeClock(START)
    recorder = Recorder()
    scheduler = Scheduler(clock, recorder)
    scheduler.upsert(make_task(1, daily("10:00")), clock.now())
    scheduler.upsert(make_task(2, daily("09:30")), clock.now())

    async def scenario() -> None:
        clock.advance(timedelta(minutes=30))  # 09:30: task 2 only
        scheduler.wake()
        await recorder.next_run()
        await asyncio.sleep(0.05)  # room for a wrong extra fire to show up
        assert recorder.runs == [(2, at(9, 30))]

    run_loop(scheduler, scenario)


def test_the_loop_fires_a_task_added_while_it_sleeps() -> None:
    clock = FakeClock(at(10))
    recorder = Recorder()
    scheduler = Scheduler(clock, recorder)

    async def scenario() -> None:
        await asyncio.sleep(0)  # the loop is now asleep with nothing to do
        scheduler.upsert(make_task(schedule=daily("10:01")), clock.now())
        clock.advance(timedelta(minutes=1))
        scheduler.wake()
        await recorder.next_run()
        assert recorder.runs == [(1, at(10, 1))]

    run_loop(scheduler, scenario)


def test_the_loop_notices_a_clock_jump_without_a_wake() -> None:
    clock = FakeClock(START)
    recorder = Recorder()
    scheduler = Scheduler(clock, recorder, max_sleep=timedelta(milliseconds=10))
    scheduler.upsert(make_task(), clock.now())

    async def scenario() -> None:
        await asyncio.sleep(0)
        clock.advance(timedelta(days=1, hours=1))  # a resume from suspend: nobody calls wake()
        await recorder.next_run()
        assert recorder.runs == [(1, at(10, day=2))]

    run_loop(scheduler, scenario)


def test_an_idle_loop_sleeps_instead_of_polling() -> None:
    clock = CountingClock(START)
    scheduler = Scheduler(clock, ignore)
    scheduler.upsert(make_task(), clock.now())

    async def scenario() -> None:
        await asyncio.sleep(0.2)
        assert clock.reads <= 3  # one look at the time per wake-up, and there were none

    run_loop(scheduler, scenario)


def test_a_failing_fire_is_logged_and_the_loop_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock(START)
    recorder = Recorder()

    def fire(task: ResolvedTask, slot: datetime) -> None:
        if task.id == 1:
            raise RuntimeError("queue is full")
        recorder(task, slot)

    scheduler = Scheduler(clock, fire)
    scheduler.upsert(make_task(1), clock.now())
    scheduler.upsert(make_task(2), clock.now())

    async def scenario() -> None:
        clock.advance(timedelta(hours=1))
        scheduler.wake()
        await recorder.next_run()
        clock.advance(timedelta(days=1))
        scheduler.wake()
        await recorder.next_run()
        assert recorder.runs == [(2, at(10)), (2, at(10, day=2))]

    with caplog.at_level(logging.ERROR, logger="reconciler.scheduler"):
        run_loop(scheduler, scenario)
    failures = [r for r in caplog.records if r.name == "reconciler.scheduler"]
    assert len(failures) == 2
    assert all("queue is full" in (r.exc_text or "") for r in failures)


# --- many entries ---------------------------------------------------------------------------


def test_ten_thousand_entries_fire_in_time_order() -> None:
    scheduler = scheduler_with(
        *(make_task(i, daily(f"{i % 24:02d}:{i % 60:02d}")) for i in range(1, 10_001))
    )
    for i in range(1, 10_001, 3):  # move a third of them, remove another third
        scheduler.upsert(make_task(i, daily("23:59")), START)
        scheduler.remove(i + 1)
    due = scheduler.pop_due(START + timedelta(days=1))
    assert len(due) == 3334 + 3333
    assert fired(due) == sorted(fired(due), key=lambda pair: (pair[1], pair[0]))
    assert all(scheduler.next_fire(task.id) == slot + timedelta(days=1) for task, slot in due)


SCHEDULES = [
    daily("10:00"),
    daily("01:30", "America/New_York"),
    Schedule(
        frequency=Frequency.WEEKLY, time="02:30", timezone="Europe/London", weekday=Weekday.SUNDAY
    ),
    Schedule(custom_cron="*/45 * * * *", timezone="Australia/Lord_Howe"),
    Schedule(custom_cron="0 */6 * * *", timezone="Europe/Berlin"),
]


class SchedulerMatchesBruteForce(RuleBasedStateMachine):
    """Random upserts, removals and time steps; a dict scanned in full is the reference."""

    def __init__(self) -> None:
        super().__init__()
        self.now = datetime(2024, 3, 8, tzinfo=UTC)  # DST changes ahead in several zones
        self.scheduler = Scheduler(FakeClock(self.now), ignore)
        self.tasks: dict[int, ResolvedTask] = {}
        self.next: dict[int, datetime | None] = {}
        self.last_slot: dict[int, datetime] = {}
        self.fired: set[tuple[int, datetime]] = set()

    @rule(
        task_id=st.integers(1, 8),
        schedule=st.sampled_from(SCHEDULES),
        paused=st.booleans(),
        label=st.sampled_from(["a", "b"]),
    )
    def upsert(self, task_id: int, schedule: Schedule, paused: bool, label: str) -> None:
        task = make_task(task_id, schedule, paused=paused, label=label)
        self.scheduler.upsert(task, self.now)
        old = self.tasks.get(task_id)
        self.tasks[task_id] = task
        if old is not None and (old.task.schedule, old.task.paused) == (schedule, paused):
            return
        after = max(self.now, self.last_slot.get(task_id, self.now))
        self.next[task_id] = None if paused else next_fire(schedule, after)

    @rule(task_id=st.integers(1, 8))
    def remove(self, task_id: int) -> None:
        self.scheduler.remove(task_id)
        self.tasks.pop(task_id, None)
        self.next.pop(task_id, None)

    @rule(minutes=st.one_of(st.integers(0, 90), st.integers(0, 3 * 24 * 60)))
    def advance_and_pop(self, minutes: int) -> None:
        self.now += timedelta(minutes=minutes)
        got = fired(self.scheduler.pop_due(self.now))
        expected = []
        for when, task_id in sorted((w, i) for i, w in self.next.items() if w is not None):
            if when > self.now:
                break
            schedule = self.tasks[task_id].task.schedule
            slot = max(when, previous_fire(schedule, self.now) or when)
            expected.append((task_id, slot))
            self.last_slot[task_id] = slot
            self.next[task_id] = next_fire(schedule, max(slot, self.now))
        assert got == expected
        for task_id, slot in got:
            assert (task_id, slot) not in self.fired
            assert previous_fire(self.tasks[task_id].task.schedule, slot) == slot
            self.fired.add((task_id, slot))

    @invariant()
    def same_entries_and_fire_times(self) -> None:
        assert dict(self.scheduler.tasks) == self.tasks
        pending = sorted((w, i) for i, w in self.next.items() if w is not None)
        assert fired(self.scheduler.upcoming()) == [(i, w) for w, i in pending]
        assert all(self.scheduler.next_fire(i) == w for i, w in self.next.items())
        assert all(w > self.now for w, _ in pending)


TestSchedulerMatchesBruteForce = SchedulerMatchesBruteForce.TestCase
TestSchedulerMatchesBruteForce.settings = settings(
    max_examples=60, stateful_step_count=40, deadline=None
)


def test_a_stopped_loop_returns_and_fires_nothing_due_after_the_stop() -> None:
    clock = FakeClock(START)
    scheduler = Scheduler(clock, ignore)
    scheduler.upsert(make_task(schedule=daily("09:30")), clock.now())

    async def main() -> None:
        loop = asyncio.create_task(scheduler.run())
        await asyncio.sleep(0)  # the loop is asleep until 09:30
        scheduler.stop(clock.now())
        clock.advance(timedelta(hours=1))  # 09:30 passes: nothing fires
        await asyncio.wait_for(loop, WAIT)

    asyncio.run(main())
    assert scheduler.stopped_at == START


def with_drill(task: ResolvedTask, schedule: Schedule) -> ResolvedTask:
    return task.model_copy(
        update={"task": task.task.model_copy(update={"verify": Verify(schedule=schedule)})}
    )


def test_a_drill_scheduler_fires_the_verify_schedule_not_the_backup_one() -> None:
    clock = FakeClock(START)
    drills = Scheduler(clock, lambda task, slot: None, schedule_of=drill_schedule)
    drills.upsert(with_drill(make_task(1, daily("10:00")), daily("12:00", "Europe/Paris")), START)

    assert drills.next_fire(1) == datetime(2024, 6, 1, 10, 0, tzinfo=UTC)  # 12:00 in Paris
    due = drills.pop_due(datetime(2024, 6, 1, 10, 0, tzinfo=UTC))
    assert [(task.id, slot) for task, slot in due] == [(1, datetime(2024, 6, 1, 10, 0, tzinfo=UTC))]


def test_a_task_without_verify_is_never_fired_by_the_drill_scheduler() -> None:
    drills = Scheduler(FakeClock(START), lambda task, slot: None, schedule_of=drill_schedule)
    drills.upsert(make_task(1, daily("10:00")), START)

    assert drills.next_fire(1) is None
    assert drills.pop_due(START + timedelta(days=2)) == []


def test_removing_verify_from_a_task_stops_its_drills() -> None:
    drills = Scheduler(FakeClock(START), lambda task, slot: None, schedule_of=drill_schedule)
    task = make_task(1, daily("10:00"))
    drills.upsert(with_drill(task, daily("11:00")), START)
    drills.upsert(task, START)

    assert drills.next_fire(1) is None


def test_a_missed_drill_is_caught_up_once_from_its_last_drill() -> None:
    drills = Scheduler(FakeClock(START), lambda task, slot: None, schedule_of=drill_schedule)
    drills.upsert(with_drill(make_task(1, daily("10:00")), daily("08:00")), START)

    missed = drills.catch_up({1: START - timedelta(days=1)}, START, timedelta(hours=6))
    assert [(task.id, slot) for task, slot in missed] == [(1, START - timedelta(hours=1))]
    assert drills.catch_up({1: START - timedelta(days=1)}, START, timedelta(hours=6)) == []
