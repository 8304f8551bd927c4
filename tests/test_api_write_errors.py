"""Write failures answer in words: no absolute path, no git output; bad input is a 422 first."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from reconciler.gitstore import Author, GitError, GitStore
from tests.apirig import ApiRig, api_rig, config_files
from tests.gitrepo import commit_files, git, init_repo
from tests.test_api_tasks import NEW_TASK

pytestmark = pytest.mark.anyio


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[ApiRig]:
    async with api_rig(tmp_path) as made:
        yield made


@pytest.mark.parametrize("label", ["a\x00b", "two\nlines", "bell\x07"])
async def test_a_label_with_a_control_character_is_a_422_and_uses_up_no_id(
    rig: ApiRig, label: str
) -> None:
    before = rig.commits()
    refused = await rig.post("/api/backup-tasks", {**NEW_TASK, "label": label})
    assert refused.status_code == 422
    assert list(refused.json()["errors"]) == ["label"]
    assert rig.commits() == before
    created = await rig.post("/api/backup-tasks", NEW_TASK)
    assert created.json()["data"]["id"] == 8


async def test_a_409_for_a_detached_head_names_no_path_on_the_backup_host(rig: ApiRig) -> None:
    git(rig.repo, "checkout", "-q", "--detach")
    response = await rig.put("/api/backup-tasks/1", {"label": "new"})
    assert response.status_code == 409
    assert str(rig.repo.parent) not in response.text
    assert response.json()["message"].startswith("Nothing was written")


async def test_a_failed_push_answers_without_gits_output(tmp_path: Path) -> None:
    upstream = tmp_path / "upstream.git"
    init_repo(tmp_path / "seed", config_files())
    git(tmp_path, "clone", "-q", "--bare", str(tmp_path / "seed"), str(upstream))
    git(tmp_path, "clone", "-q", str(upstream), str(tmp_path / "config"))
    async with api_rig(tmp_path, clone=True, push=True) as rig:
        shutil.rmtree(upstream)
        response = await rig.put("/api/backup-tasks/1", {"label": "not pushed"})
    assert response.status_code == 409
    message = response.json()["message"]
    assert "but not pushed" in message
    assert str(tmp_path) not in message
    assert "fatal" not in message


async def test_a_task_file_linked_in_the_work_tree_is_never_written_through(
    rig: ApiRig, tmp_path: Path
) -> None:
    outside = tmp_path / "outside.yaml"
    path = rig.repo / "tasks/1-first.yaml"
    outside.write_text(path.read_text())
    path.unlink()
    path.symlink_to(outside)  # same content as committed: the file looks clean through the link
    before = outside.read_text()

    response = await rig.put("/api/backup-tasks/1", {"label": "through the link"})

    assert response.status_code == 409
    assert outside.read_text() == before
    assert path.is_symlink()


async def test_a_folder_linked_in_the_work_tree_is_never_written_into(
    rig: ApiRig, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (rig.repo / "tasks/new").symlink_to(elsewhere)

    commit = GitStore(rig.repo)
    with pytest.raises(GitError, match="symbolic link"):
        commit.commit(
            {"tasks/new/9.yaml": b"id: 9\n"},
            Author("a", "a@example.com"),
            "through a link",
            rig.clock.now(),
            parent=commit.head(),
        )
    assert list(elsewhere.iterdir()) == []


async def test_an_oversized_task_file_is_not_read_for_an_edit(rig: ApiRig) -> None:
    path = "tasks/1-first.yaml"
    commit_files(rig.repo, {path: rig.file(path) + "#" * (1024 * 1024)}, "a person's huge file")
    await rig.engine.sync()  # task 1 keeps running from its last good version

    response = await rig.put("/api/backup-tasks/1", {"label": "edited"})

    assert response.status_code == 409
    assert "limit" in response.json()["message"]
