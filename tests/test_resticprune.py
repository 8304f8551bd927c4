"""When the daemon prunes each restic repository: `prune.schedule` per destination, followed as
the config set changes, and the loop that carries the prunes out."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from reconciler.cron import next_fire
from reconciler.models import ResticDestination, ResticPrune, Schedule
from reconciler.resticprune import PruneResult, PruneSchedule, ResticPrunes, restic_destinations
from tests.clock import FakeClock
from tests.runs import files_task
from tests.servers import SshServer

SATURDAY = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
SUNDAY_4AM = datetime(2026, 12, 6, 4, 0, tzinfo=UTC)


def vault(destination_id: int = 1, schedule: Schedule | None = None) -> ResticDestination:
    fields: dict[str, object] = {
        "id": destination_id, "user_id": 1, "label": f"vault {destination_id}", "type": "restic",
        "repository": f"/srv/restic-{destination_id}", "password": {"env": "PW"},
    }  # fmt: skip
    if schedule is not None:
        fields["prune"] = {"schedule": schedule.model_dump()}
    return ResticDestination.model_validate(fields)


def test_a_destination_is_pruned_first_on_the_sunday_after_it_appears() -> None:
    schedule = PruneSchedule()
    destinations = {1: vault()}
    assert schedule.due(destinations, SATURDAY) == []
    assert schedule.next_at(1) == SUNDAY_4AM
    assert schedule.due(destinations, SUNDAY_4AM - timedelta(seconds=1)) == []
    assert schedule.due(destinations, SUNDAY_4AM) == [destinations[1]]
    assert schedule.next_at(1) == SUNDAY_4AM + timedelta(weeks=1)


def test_a_changed_schedule_starts_from_now() -> None:
    schedule = PruneSchedule()
    schedule.due({1: vault()}, SATURDAY)
    hourly = Schedule(custom_cron="0 * * * *")
    assert schedule.due({1: vault(schedule=hourly)}, SATURDAY) == []
    assert schedule.next_at(1) == SATURDAY + timedelta(hours=1)


def test_a_removed_destination_or_one_with_prune_off_is_never_pruned() -> None:
    schedule = PruneSchedule()
    schedule.due({1: vault(), 2: vault(2)}, SATURDAY)
    off = vault(2).model_copy(update={"prune": None})
    assert schedule.due({2: off}, SUNDAY_4AM) == []
    assert schedule.next_at(1) is None
    assert schedule.next_at(2) is None
    assert schedule.soonest() is None


@given(st.lists(st.integers(1, 60 * 24 * 30), min_size=1, max_size=40))
def test_each_fire_time_prunes_once_however_often_it_is_asked(minutes: list[int]) -> None:
    schedule = PruneSchedule()
    at_half_past_three = Schedule(custom_cron="30 3 * * *")
    daily = {1: vault(schedule=at_half_past_three)}
    schedule.due(daily, SATURDAY)
    pruned_at = []
    for offset in sorted(minutes):
        now = SATURDAY + timedelta(minutes=offset)
        if schedule.due(daily, now):
            pruned_at.append(now)
    # Each prune has a 03:30 of its own since the one before: never two for one fire time, and
    # one asked for late (the loop was busy) still comes.
    for before, moment in zip([SATURDAY, *pruned_at], pruned_at, strict=False):
        assert next_fire(at_half_past_three, before) <= moment
    last = pruned_at[-1] if pruned_at else SATURDAY
    assert next_fire(at_half_past_three, last) > SATURDAY + timedelta(minutes=max(minutes))


def test_only_the_restic_destinations_that_tasks_use_are_pruned(
    sshd: SshServer, tmp_path: Path
) -> None:
    local = files_task(sshd, tmp_path / "backups", tmp_path)
    on_vault = local.model_copy(update={"id": 2, "destination": vault(7)})
    assert restic_destinations([local, on_vault]) == {7: vault(7)}


def test_the_loop_prunes_when_due_and_records_how_it_went(sshd: SshServer, tmp_path: Path) -> None:
    clock = FakeClock(SUNDAY_4AM - timedelta(minutes=1))
    task = files_task(sshd, tmp_path / "backups", tmp_path).model_copy(
        update={"destination": vault(3)}
    )
    pruned: list[tuple[int, bool]] = []

    def prune(destination: ResticDestination, cancel: threading.Event) -> tuple[PruneResult, str]:
        pruned.append((destination.id, cancel.is_set()))
        return PruneResult.DONE, "this prune removed 0 B"

    async def scenario() -> None:
        prunes = ResticPrunes(
            clock=clock, tasks=lambda: [task], prune=prune, max_sleep=timedelta(seconds=0.05)
        )
        loop = asyncio.create_task(prunes.run())
        await asyncio.sleep(0.2)
        assert pruned == []
        clock.advance(timedelta(minutes=1))
        for _ in range(100):
            if prunes.records:
                break
            await asyncio.sleep(0.05)
        prunes.stop()
        await loop
        assert pruned == [(3, False)]
        record = prunes.records[3]
        assert (record.result, record.finished_at, record.message) == (
            PruneResult.DONE, SUNDAY_4AM, "this prune removed 0 B",
        )  # fmt: skip
        assert prunes.next_at(3) == SUNDAY_4AM + timedelta(weeks=1)

    asyncio.run(scenario())


def test_prune_off_is_written_as_null() -> None:
    assert vault().prune == ResticPrune()
    assert ResticDestination.model_validate({**vault().model_dump(), "prune": None}).prune is None
