"""With `push`, every API commit reaches the upstream branch; a real conflict is a 409."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.apirig import ApiRig, api_rig, config_files
from tests.gitrepo import commit_files, git, head, init_repo

pytestmark = pytest.mark.anyio


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[ApiRig]:
    upstream = tmp_path / "upstream.git"
    seed = tmp_path / "seed"
    init_repo(seed, config_files())
    git(tmp_path, "clone", "-q", "--bare", str(seed), str(upstream))
    git(tmp_path, "clone", "-q", str(upstream), str(tmp_path / "config"))
    async with api_rig(tmp_path, clone=True, push=True) as made:
        yield made


async def test_an_api_commit_is_pushed_before_the_response(rig: ApiRig) -> None:
    response = await rig.put("/api/backup-tasks/1", {"label": "pushed"})
    assert response.status_code == 200
    upstream = rig.repo.parent / "upstream.git"
    assert git(upstream, "rev-parse", "main").strip() == head(rig.repo)


async def test_a_person_pushing_first_is_rebased_onto_not_overwritten(rig: ApiRig) -> None:
    other = rig.repo.parent / "other"
    git(rig.repo.parent, "clone", "-q", str(rig.repo.parent / "upstream.git"), str(other))
    commit_files(other, {"tasks/2-grace.yaml": None}, "a person deletes task 2")
    git(other, "push", "-q", "origin", "main")
    response = await rig.put("/api/backup-tasks/1", {"label": "after the person"})
    assert response.status_code == 200
    upstream_log = git(rig.repo.parent / "upstream.git", "log", "--format=%s", "main")
    assert upstream_log.splitlines()[:2] == [
        "api: update backup task 1 (label)",
        "a person deletes task 2",
    ]


async def test_a_real_conflict_is_a_409_and_the_persons_commit_wins(rig: ApiRig) -> None:
    other = rig.repo.parent / "other"
    git(rig.repo.parent, "clone", "-q", str(rig.repo.parent / "upstream.git"), str(other))
    text = (other / "tasks/1-first.yaml").read_text().replace("task 1", "the person's label")
    commit_files(other, {"tasks/1-first.yaml": text}, "a person relabels task 1")
    git(other, "push", "-q", "origin", "main")
    response = await rig.put("/api/backup-tasks/1", {"label": "the API's label"})
    assert response.status_code == 409
    assert "not pushed" in response.json()["message"]
    upstream_head = git(rig.repo.parent / "upstream.git", "log", "-1", "--format=%s", "main")
    assert upstream_head.strip() == "a person relabels task 1"
