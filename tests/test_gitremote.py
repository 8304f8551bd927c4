"""Pushing to the upstream (reconciler.gitremote): rebased when rejected, never forced, and never
holding the store's lock across network I/O. Remotes are local bare repositories."""

from __future__ import annotations

import os
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from reconciler import gitremote
from reconciler.gitremote import GitConflictError, push
from reconciler.gitstore import Author, GitError, GitStore
from tests.gitrepo import commit_files, git, head, small_config_repo, work_tree_status

AUTHOR = Author("Ada Admin", "ada@example.com")
NOW = datetime(2024, 5, 1, 9, 30, tzinfo=UTC)
HOOK_WAIT_SECONDS = 15


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return small_config_repo(tmp_path)


@pytest.fixture
def upstream(tmp_path: Path, repo: Path) -> Path:
    bare = tmp_path / "upstream.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(bare))
    git(repo, "remote", "add", "origin", str(bare))
    git(repo, "push", "-q", "origin", "main")
    return bare


def someone_else_pushes(tmp_path: Path, upstream: Path, files: dict[str, str | None]) -> str:
    other = tmp_path / "other"
    if not other.exists():
        git(tmp_path, "clone", "-q", str(upstream), str(other))
    git(other, "pull", "-q", "--ff-only")
    sha = commit_files(other, files, "someone else's change")
    git(other, "push", "-q", "origin", "main")
    return sha


def test_push_sends_our_commits_upstream(repo: Path, upstream: Path) -> None:
    store = GitStore(repo)
    sha = store.commit({"tasks/b.yaml": b"id: 2\n"}, AUTHOR, "add", NOW, parent=store.head())

    push(repo)

    assert git(upstream, "rev-parse", "main").strip() == sha


def test_push_to_an_unknown_remote_is_a_git_error(repo: Path, upstream: Path) -> None:
    with pytest.raises(GitError, match="no remote named 'elsewhere'"):
        push(repo, "elsewhere")


def test_a_rejected_push_is_rebased_onto_the_upstream_and_pushed(
    tmp_path: Path, repo: Path, upstream: Path
) -> None:
    store = GitStore(repo)
    theirs = someone_else_pushes(tmp_path, upstream, {"tasks/theirs.yaml": "id: 9\n"})
    store.commit({"tasks/ours.yaml": b"id: 8\n"}, AUTHOR, "ours", NOW, parent=store.head())

    push(repo)

    pushed = git(upstream, "rev-parse", "main").strip()
    assert pushed == head(repo)
    assert git(repo, "rev-parse", "HEAD^").strip() == theirs
    assert git(repo, "show", "-s", "--format=%an|%cn|%s", "HEAD").strip() == (
        "Ada Admin|Ada Admin|ours"
    )
    assert (repo / "tasks" / "theirs.yaml").read_text() == "id: 9\n"
    assert set(store.list_files("HEAD")) == {
        "tasks/a.yaml",
        "tasks/ours.yaml",
        "tasks/theirs.yaml",
        "users.yaml",
    }
    assert work_tree_status(repo) == ""


def test_a_real_conflict_raises_and_loses_nothing(
    tmp_path: Path, repo: Path, upstream: Path
) -> None:
    store = GitStore(repo)
    theirs = someone_else_pushes(tmp_path, upstream, {"tasks/a.yaml": "id: 1\nlabel: theirs\n"})
    ours = store.commit(
        {"tasks/a.yaml": b"id: 1\nlabel: ours\n"}, AUTHOR, "ours", NOW, parent=store.head()
    )

    with pytest.raises(GitConflictError, match=r"tasks/a\.yaml"):
        push(repo)

    assert head(repo) == ours
    assert (repo / "tasks" / "a.yaml").read_text() == "id: 1\nlabel: ours\n"
    assert git(upstream, "rev-parse", "main").strip() == theirs
    assert work_tree_status(repo) == ""


def test_local_modifications_in_the_way_of_a_rebase_raise_and_move_nothing(
    tmp_path: Path, repo: Path, upstream: Path
) -> None:
    store = GitStore(repo)
    someone_else_pushes(tmp_path, upstream, {"tasks/a.yaml": "id: 1\nlabel: theirs\n"})
    ours = store.commit({"tasks/ours.yaml": b"id: 8\n"}, AUTHOR, "ours", NOW, parent=store.head())
    (repo / "tasks" / "a.yaml").write_text("id: 1\nlabel: being edited\n")

    with pytest.raises(GitConflictError, match="local modifications"):
        push(repo)

    assert head(repo) == ours
    assert (repo / "tasks" / "a.yaml").read_text() == "id: 1\nlabel: being edited\n"
    assert work_tree_status(repo) == " M tasks/a.yaml\n"


def slow_upstream(tmp_path: Path, repo: Path) -> tuple[Path, Path]:
    """A bare upstream (reached over file://) whose pre-receive hook touches `started`, then
    waits for `release` (at most HOOK_WAIT_SECONDS): a push that hangs until we let it go."""
    bare = tmp_path / "slow.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(bare))
    started, release = tmp_path / "hook-started", tmp_path / "hook-release"
    hook = bare / "hooks" / "pre-receive"
    hook.write_text(
        "#!/bin/sh\n"
        f"touch '{started}'\n"
        "i=0\n"
        f"while [ ! -e '{release}' ] && [ $i -lt {HOOK_WAIT_SECONDS * 20} ]; do\n"
        "  sleep 0.05; i=$((i+1))\n"
        "done\n"
    )
    hook.chmod(0o755)
    git(repo, "remote", "add", "origin", f"file://{bare}")
    return started, release


def wait_for(path: Path) -> None:
    for _ in range(600):
        if path.exists():
            return
        time.sleep(0.05)
    raise AssertionError(f"{path} never appeared")


def test_a_hanging_push_blocks_neither_reads_nor_commits(tmp_path: Path, repo: Path) -> None:
    started, release = slow_upstream(tmp_path, repo)
    store = GitStore(repo)
    pushed = store.commit({"tasks/b.yaml": b"id: 2\n"}, AUTHOR, "add b", NOW, parent=store.head())
    pushing = threading.Thread(target=push, args=(repo,))
    pushing.start()
    try:
        wait_for(started)

        assert store.head() == pushed
        assert "tasks/b.yaml" in store.list_files(pushed)
        later = store.commit({"tasks/c.yaml": b"id: 3\n"}, AUTHOR, "add c", NOW, parent=pushed)

        # All of that happened while the remote was still holding the push.
        assert pushing.is_alive()
        assert not release.exists()
    finally:
        release.touch()
        pushing.join()
    assert git(tmp_path / "slow.git", "rev-parse", "main").strip() == pushed
    assert store.head() == later


def test_a_push_past_its_deadline_is_stopped_and_reported(
    tmp_path: Path, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started, release = slow_upstream(tmp_path, repo)
    monkeypatch.setattr(gitremote, "GIT_TIMEOUT", 1.0)

    with pytest.raises(GitError, match=r"^git push timed out after 1 s and was stopped"):
        push(repo)

    assert started.exists()
    assert not release.exists()


def test_a_file_touched_but_unchanged_does_not_block_a_rebase(
    tmp_path: Path, repo: Path, upstream: Path
) -> None:
    store = GitStore(repo)
    someone_else_pushes(tmp_path, upstream, {"tasks/a.yaml": "id: 1\nlabel: theirs\n"})
    store.commit({"tasks/ours.yaml": b"id: 8\n"}, AUTHOR, "ours", NOW, parent=store.head())
    touched = repo / "tasks" / "a.yaml"
    touched.write_text(touched.read_text())  # same content, new modification time
    os.utime(touched, (time.time() + 5, time.time() + 5))

    push(repo)

    assert touched.read_text() == "id: 1\nlabel: theirs\n"
    assert git(upstream, "rev-parse", "main").strip() == head(repo)
    assert work_tree_status(repo) == ""


def test_a_commit_landing_during_a_rebase_is_kept_and_pushed(
    tmp_path: Path, repo: Path, upstream: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = GitStore(repo)
    someone_else_pushes(tmp_path, upstream, {"tasks/theirs.yaml": "id: 9\n"})
    store.commit({"tasks/ours.yaml": b"id: 8\n"}, AUTHOR, "ours", NOW, parent=store.head())
    replay = gitremote._replay
    landed: list[str] = []

    def replay_while_someone_commits(*args: Any) -> Any:
        onto = replay(*args)
        if not landed:  # the store commits after the replay, before the branch is moved
            meanwhile = {"tasks/meanwhile.yaml": b"id: 7\n"}
            landed.append(store.commit(meanwhile, AUTHOR, "meanwhile", NOW, parent=store.head()))
        return onto

    monkeypatch.setattr(gitremote, "_replay", replay_while_someone_commits)

    push(repo)

    subjects = git(upstream, "log", "--format=%s", "main").splitlines()
    assert subjects[:3] == ["meanwhile", "ours", "someone else's change"]
    assert git(upstream, "rev-parse", "main").strip() == head(repo)
    assert (repo / "tasks" / "meanwhile.yaml").read_text() == "id: 7\n"
    assert work_tree_status(repo) == ""
