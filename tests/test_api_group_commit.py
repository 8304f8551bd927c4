"""Group commit: writes queued while one is in progress land as one chain, reconciled once.

Each test holds the writer busy with a write whose preparation waits for a signal, sends the
requests under test (they queue behind it), and lets it go: the queued requests are then
exactly one group, which is what makes the counts below exact.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from reconciler.api.writer import Base, Prepared
from tests import configset
from tests.apirig import ApiRig, api_rig, config_files
from tests.gitrepo import git, person_sets_max_backups
from tests.test_api_tasks import NEW_TASK

pytestmark = pytest.mark.anyio

# Tasks 10 to 17, alternately user 1's and user 2's, besides the rig's 1, 2 and 7.
EXTRA = {f"tasks/{n}-extra.yaml": configset.task(n, 1 + n % 2) for n in range(10, 18)}
FAR = "tasks/shop/7-shop-database.yaml"


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[ApiRig]:
    async with api_rig(tmp_path, {**config_files(), **EXTRA}) as made:
        yield made


def _reflog_moves(rig: ApiRig) -> int:
    """How many times the branch was moved (each move writes one reflog entry)."""
    return len(git(rig.repo, "reflog", "show", "--format=%H", "main").splitlines())


def _log(rig: ApiRig, count: int) -> list[tuple[str, str, str, str]]:
    """(sha, parent, author name, subject) of the newest `count` commits, oldest first."""
    lines = git(rig.repo, "log", f"-{count}", "--format=%H%x00%P%x00%an%x00%s").splitlines()
    return [tuple(line.split("\0")) for line in reversed(lines)]  # type: ignore[misc]


@asynccontextmanager
async def _one_group(
    rig: ApiRig, *sends: Callable[[], Coroutine[Any, Any, httpx.Response]]
) -> AsyncIterator[list[asyncio.Task[httpx.Response]]]:
    """The requests `sends` make, queued behind a held write, then let go as one group."""
    writer = rig.daemon.app.state.reconciler.writer
    started, release = threading.Event(), threading.Event()

    def held(_base: Base) -> Prepared[None]:
        started.set()
        release.wait(10)
        return Prepared(respond=lambda _desired: None)

    holder = asyncio.create_task(writer.write(held))
    while not started.is_set():
        await asyncio.sleep(0.005)
    requests = [asyncio.create_task(send()) for send in sends]
    for _ in range(2000):
        if writer.queued == len(sends):
            break
        await asyncio.sleep(0.005)
    assert writer.queued == len(sends), "the requests never queued behind the held write"
    release.set()
    await holder
    await asyncio.gather(*requests)
    yield requests


async def test_queued_writes_land_as_a_chain_of_their_own_commits_reconciled_once(
    rig: ApiRig,
) -> None:
    tasks = range(10, 18)
    reconciles, moves = rig.engine.reconciles, _reflog_moves(rig)
    head = git(rig.repo, "rev-parse", "HEAD").strip()
    sends = [
        lambda n=n: rig.put(f"/api/backup-tasks/{n}", {"label": f"label {n}"}, user_id=1 + n % 2)
        for n in tasks
    ]
    async with _one_group(rig, *sends) as requests:
        assert [r.result().status_code for r in requests] == [200] * len(tasks)
    chain = _log(rig, len(tasks))
    # In the order the requests reached the writer, each on top of the one before.
    assert [parent for _, parent, *_ in chain] == [head] + [sha for sha, *_ in chain[:-1]]
    subjects = {subject: author for *_, author, subject in chain}
    assert subjects == {
        f"api: update backup task {n} (label)": "Grace" if n % 2 else "Ada" for n in tasks
    }
    assert _reflog_moves(rig) - moves == 1
    assert rig.engine.reconciles - reconciles == 1
    for n, request in zip(tasks, requests, strict=True):
        assert request.result().json()["data"]["label"] == f"label {n}"
        assert rig.engine.desired.tasks[n].task.label == f"label {n}"
    assert rig.work_tree_status() == ""


async def test_one_write_costs_one_reconcile_even_after_the_ref_watch_sees_it(rig: ApiRig) -> None:
    reconciles = rig.engine.reconciles
    response = await rig.put("/api/backup-tasks/10", {"label": "watched"})
    assert response.status_code == 200
    assert rig.engine.reconciles - reconciles == 1
    # The ref watch reports the commit about 100 ms after it (its debounce).
    await asyncio.sleep(0.5)
    assert rig.engine.reconciles - reconciles == 1
    assert rig.engine.revision == git(rig.repo, "rev-parse", "HEAD").strip()


async def test_a_refused_write_fails_alone_and_the_rest_of_its_group_lands(rig: ApiRig) -> None:
    # Task 12's file has local changes: its commit is refused, after its preparation succeeded.
    dirty = rig.repo / "tasks/12-extra.yaml"
    dirty.write_text(dirty.read_text() + "# being edited by hand\n")
    before = len(rig.commits())
    async with _one_group(
        rig,
        lambda: rig.put("/api/backup-tasks/10", {"label": "ten"}, user_id=1),
        lambda: rig.put("/api/backup-tasks/11", {"remote_server_id": 999}, user_id=2),
        lambda: rig.put("/api/backup-tasks/12", {"label": "twelve"}, user_id=1),
        lambda: rig.put("/api/backup-tasks/13", {"label": "thirteen"}, user_id=2),
    ) as requests:
        statuses = [r.result().status_code for r in requests]
    assert statuses == [200, 422, 409, 200]
    assert "remote_server_id" in requests[1].result().json()["errors"]
    assert "local changes" in requests[2].result().json()["message"]
    assert sorted(rig.commits()[:2]) == [
        "api: update backup task 10 (label)",
        "api: update backup task 13 (label)",
    ]
    assert len(rig.commits()) - before == 2
    assert rig.work_tree_status() == " M tasks/12-extra.yaml\n"


async def test_creates_in_one_group_get_distinct_new_ids(rig: ApiRig) -> None:
    reconciles = rig.engine.reconciles
    bodies = [{**NEW_TASK, "label": f"new {n}"} for n in range(3)]
    async with _one_group(
        rig, *[lambda body=body: rig.post("/api/backup-tasks", body) for body in bodies]
    ) as requests:
        created = [r.result() for r in requests]
    assert [r.status_code for r in created] == [201, 201, 201], created[0].text
    # In the order the requests reached the writer, each above the ids taken before it.
    ids = {r.json()["data"]["label"]: r.json()["data"]["id"] for r in created}
    assert sorted(ids.values()) == [18, 19, 20]
    assert rig.engine.reconciles - reconciles == 1
    assert {rig.engine.desired.tasks[n].task.label: n for n in (18, 19, 20)} == ids


async def test_two_writes_to_one_task_in_a_group_both_land(rig: ApiRig) -> None:
    # Whole files are committed: the second, prepared from the same head, must not undo the
    # first; it is prepared again from the first's commit.
    async with _one_group(
        rig,
        lambda: rig.put("/api/backup-tasks/10", {"label": "renamed"}),
        lambda: rig.put("/api/backup-tasks/10", {"maximum_backups_to_keep": 9}),
    ) as requests:
        assert [r.result().status_code for r in requests] == [200, 200]
    task = rig.engine.desired.tasks[10].task
    assert (task.label, task.storage.max_backups) == ("renamed", 9)
    # Whichever reached the writer second was prepared again from the other's commit.
    answers = [r.result().json()["data"] for r in requests]
    assert any(a["label"] == "renamed" and a["storage"]["max_backups"] == 9 for a in answers)


async def test_a_retry_queued_with_its_first_attempt_answers_from_that_commit(
    rig: ApiRig,
) -> None:
    headers = {**rig.auth(1), "Idempotency-Key": "same-request"}

    def send() -> Coroutine[Any, Any, httpx.Response]:
        return rig.client.put("/api/backup-tasks/10", json={"label": "once"}, headers=headers)

    before = len(rig.commits())
    async with _one_group(rig, send, send) as requests:
        first, retry = (r.result() for r in requests)
    assert (first.status_code, retry.status_code) == (200, 200)
    assert retry.json() == first.json()
    assert len(rig.commits()) - before == 1


async def test_a_persons_commit_racing_a_group_is_kept_and_so_is_every_write(
    rig: ApiRig, caplog: pytest.LogCaptureFixture
) -> None:
    # A long comment makes preparing task 7's edit slow enough for the person to commit inside.
    long = (rig.repo / FAR).read_text() + "# note\n" * 20_000
    (rig.repo / FAR).write_text(long)
    git(rig.repo, "commit", "-q", "-am", "person: notes")
    caplog.set_level(logging.INFO, logger="reconciler.api")
    others = (10, 11, 12)
    for round_ in range(3):
        person = asyncio.create_task(
            asyncio.to_thread(person_sets_max_backups, rig.repo, FAR, 100 + round_)
        )
        api = await asyncio.gather(
            rig.put("/api/backup-tasks/7", {"label": f"api {round_}"}),
            *[
                rig.put(f"/api/backup-tasks/{n}", {"label": f"r{round_} {n}"}, user_id=1 + n % 2)
                for n in others
            ],
        )
        await person
        text = (rig.repo / FAR).read_text()
        assert f"max_backups: {100 + round_}" in text, f"round {round_}: the person's edit was lost"
        assert {r.status_code for r in api} <= {200, 409}, [r.text for r in api]
        if api[0].status_code == 200:
            assert re.search(rf"^label: '?api {round_}'?\s", text, re.MULTILINE)
        for n, response in zip(others, api[1:], strict=True):
            assert response.status_code == 200, response.text
            assert f"r{round_} {n}" in (rig.repo / f"tasks/{n}-extra.yaml").read_text()
        assert rig.work_tree_status() == ""
    prepared_again = [r for r in caplog.records if "preparing it again" in r.getMessage()]
    assert prepared_again, "no round had the branch move under it: the race was never run"
