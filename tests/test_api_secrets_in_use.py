"""The API never deletes a secret that a committed file may still use."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from reconciler.models import SecretRef
from reconciler.secrets import SecretError
from tests import configset
from tests.apirig import ApiRig, api_rig
from tests.gitrepo import commit_files

pytestmark = pytest.mark.anyio

TASK = "tasks/1-first.yaml"


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[ApiRig]:
    async with api_rig(tmp_path) as made:
        yield made


def _dangling(rig: ApiRig) -> list[str]:
    """Secret keys the committed task files name that the secrets store does not hold."""
    named = set()
    for path in (rig.repo / "tasks").rglob("*.yaml"):
        named.update(re.findall(r"secret: (\S+?)[},\s]", path.read_text()))
    missing = []
    for key in sorted(named):
        try:
            rig.secrets.resolve(SecretRef(secret=key))
        except SecretError:
            missing.append(key)
    return missing


async def _secret_shared_with_a_persons_file(rig: ApiRig) -> SecretRef:
    """Task 1 gets a secret from the API, and a person's task 3 names the same key."""
    await rig.put("/api/backup-tasks/1", {"encryption_password": "first"})
    ref = rig.engine.desired.tasks[1].task.encryption_password
    assert ref is not None
    assert ref.secret is not None
    copied = configset.task(3, 1, encryption_password={"secret": ref.secret})
    commit_files(rig.repo, {"tasks/3-copy.yaml": copied}, "a person reuses the secret")
    return ref


async def test_a_replaced_secret_another_file_names_is_kept(rig: ApiRig) -> None:
    ref = await _secret_shared_with_a_persons_file(rig)

    await rig.put("/api/backup-tasks/1", {"encryption_password": "second"})

    assert rig.secrets.resolve(ref) == "first"


async def test_a_deleted_tasks_secret_another_file_names_is_kept(rig: ApiRig) -> None:
    ref = await _secret_shared_with_a_persons_file(rig)

    await rig.delete("/api/backup-tasks/1")

    assert rig.secrets.resolve(ref) == "first"


async def _written(rig: ApiRig, before: str) -> None:
    """Until the commit in flight has rewritten the task file in the work tree."""
    for _ in range(20_000):
        if rig.file(TASK) != before:
            return
        await asyncio.sleep(0)
    raise AssertionError("the task file was never rewritten")


async def test_a_request_cancelled_while_committing_never_leaves_a_dangling_reference(
    rig: ApiRig,
) -> None:
    # A long file makes the commit slow enough to be cancelled while it runs.
    commit_files(rig.repo, {TASK: rig.file(TASK) + "# note\n" * 10_000}, "person: notes")
    for attempt in range(5):
        before = rig.file(TASK)
        request = asyncio.create_task(
            rig.put("/api/backup-tasks/1", {"encryption_password": f"pass {attempt}"})
        )
        await _written(rig, before)
        request.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await request
        # A later write waits for the cancelled one to end.
        await rig.put("/api/backup-tasks/1", {"description": f"after {attempt}"})
        assert _dangling(rig) == [], f"attempt {attempt}"
