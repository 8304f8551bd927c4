"""The file-time index agrees with the history walk, follows commits, and is rebuilt when missing;
a task list costs the same at 10 and at 2,000 commits."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from reconciler.filetimes import FileTimesIndex, fold_changes, merge_rows
from reconciler.gitstore import FileChanges, GitStore
from reconciler.state import StateStore
from reconciler.state.filetimes import IndexedFileTimes
from reconciler.state.sqlite import SqliteStateStore
from tests import configset
from tests.apirig import api_rig
from tests.gitrepo import append_commits, commit_files, git, head, init_repo, rename

T = [datetime(2026, 1, day, tzinfo=UTC) for day in range(1, 29)]


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "config"
    init_repo(path, {"tasks/a.yaml": "a: 0\n", "tasks/b.yaml": "b: 0\n", "users.yaml": "[]\n"})
    return path


@pytest.fixture
def history(tmp_path: Path) -> Iterator[StateStore]:
    opened = SqliteStateStore(tmp_path / "state.db")
    yield opened
    opened.close()


def at(repo: Path, day: int, *args: str) -> str:
    """`git ARGS` with author and committer time T[day]."""
    stamp = f"{int(T[day].timestamp())} +0000"
    return git(repo, *args, extra_env={"GIT_AUTHOR_DATE": stamp, "GIT_COMMITTER_DATE": stamp})


def write(repo: Path, path: str, content: str | None) -> None:
    if content is None:
        git(repo, "rm", "-q", "--", path)
        return
    (repo / path).parent.mkdir(parents=True, exist_ok=True)
    (repo / path).write_text(content)
    git(repo, "add", "--", path)


def commit(repo: Path, day: int, files: dict[str, str | None], message: str = "edit") -> str:
    for path, content in files.items():
        write(repo, path, content)
    at(repo, day, "commit", "-q", "--allow-empty", "-m", message)
    return head(repo)


def tangled_history(repo: Path) -> list[str]:
    """Edits, a file left alone, a side branch merged twice (once keeping our version with
    `-s ours`), a rename, and a file deleted and added again. The heads, in order."""
    heads = [head(repo)]
    heads.append(commit(repo, 2, {"tasks/a.yaml": "a: 1\n"}))
    git(repo, "branch", "side")
    heads.append(commit(repo, 3, {"tasks/c.yaml": "c: 0\n"}))
    git(repo, "checkout", "-q", "side")
    commit(repo, 4, {"tasks/a.yaml": "a: side\n", "tasks/b.yaml": "b: side\n"})
    git(repo, "checkout", "-q", "main")
    at(repo, 5, "merge", "-q", "-s", "ours", "-m", "keep ours", "side")
    heads.append(head(repo))
    git(repo, "checkout", "-q", "side")
    commit(repo, 6, {"tasks/d.yaml": "d: 0\n"})
    git(repo, "checkout", "-q", "main")
    at(repo, 7, "merge", "-q", "--no-ff", "-m", "take d", "side")
    heads.append(head(repo))
    git(repo, "mv", "tasks/c.yaml", "tasks/renamed-c.yaml")
    at(repo, 8, "commit", "-q", "-m", "rename c")
    heads.append(head(repo))
    heads.append(commit(repo, 9, {"tasks/b.yaml": None}))
    heads.append(commit(repo, 10, {"tasks/b.yaml": "b: again\n"}))
    return heads


def all_paths(store: GitStore) -> list[str]:
    return [*sorted(store.list_files("HEAD")), "tasks/c.yaml", "tasks/never.yaml"]


def wait_for_index(index: FileTimesIndex) -> None:
    deadline = time.monotonic() + 30
    while index.rebuilding:
        assert time.monotonic() < deadline, "the rebuild never finished"
        time.sleep(0.01)


def test_a_rebuilt_index_agrees_with_the_history_walk(repo: Path, history: StateStore) -> None:
    tangled_history(repo)
    store = GitStore(repo)
    index = FileTimesIndex(store, history.file_times)

    index.follow(store.head())
    wait_for_index(index)

    assert history.file_times.file_times_revision() == store.head()
    assert index.times(all_paths(store)) == store.files_times(all_paths(store))


def test_an_index_followed_commit_by_commit_agrees_with_the_walk(
    repo: Path, history: StateStore
) -> None:
    store = GitStore(repo)
    index = FileTimesIndex(store, history.file_times)
    index.follow(store.head())
    wait_for_index(index)

    for revision in tangled_history(repo)[1:]:
        index.follow(revision)
        assert not index.rebuilding
        assert history.file_times.file_times_revision() == revision

    assert index.times(all_paths(store)) == store.files_times(all_paths(store))


def test_the_times_of_a_tangled_history(repo: Path, history: StateStore) -> None:
    tangled_history(repo)
    store = GitStore(repo)
    index = FileTimesIndex(store, history.file_times)
    index.follow(store.head())
    wait_for_index(index)

    times = index.times(["tasks/a.yaml", "tasks/b.yaml", "tasks/d.yaml", "tasks/renamed-c.yaml"])

    initial = datetime.fromtimestamp(int(git(repo, "log", "--format=%ct", "-1", "HEAD~6^")), UTC)
    # The merge that kept our version (day 5) changed nothing; the side commit did (day 4).
    assert times["tasks/a.yaml"] == (initial, T[4])
    assert times["tasks/b.yaml"] == (initial, T[10])  # deleted and added again
    assert times["tasks/d.yaml"] == (T[6], T[6])  # merged from the side branch
    assert times["tasks/renamed-c.yaml"] == (T[8], T[8])  # a rename is a new file


def test_lookups_walk_git_while_there_is_no_index(repo: Path, history: StateStore) -> None:
    tangled_history(repo)
    store = GitStore(repo)

    times = FileTimesIndex(store, history.file_times).times(all_paths(store))

    assert times == store.files_times(all_paths(store))
    assert history.file_times.file_times_revision() is None


def test_a_branch_reset_behind_the_index_rebuilds_it(repo: Path, history: StateStore) -> None:
    store = GitStore(repo)
    index = FileTimesIndex(store, history.file_times)
    first = head(repo)
    commit(repo, 2, {"tasks/a.yaml": "a: 1\n"})
    index.follow(store.head())
    wait_for_index(index)
    git(repo, "reset", "-q", "--hard", first)
    commit(repo, 3, {"tasks/b.yaml": "b: 1\n"})

    index.follow(store.head())
    wait_for_index(index)

    assert history.file_times.file_times_revision() == store.head()
    assert index.times(all_paths(store)) == store.files_times(all_paths(store))


def test_a_deleted_state_store_gets_its_index_back(tmp_path: Path, repo: Path) -> None:
    tangled_history(repo)
    store = GitStore(repo)
    first = SqliteStateStore(tmp_path / "first.db")
    FileTimesIndex(store, first.file_times).follow(store.head())
    first.close()

    fresh = SqliteStateStore(tmp_path / "fresh.db")  # as if the state store had been deleted
    try:
        index = FileTimesIndex(store, fresh.file_times)
        index.follow(store.head())
        wait_for_index(index)
        assert fresh.file_times.file_times_revision() == store.head()
        assert index.times(all_paths(store)) == store.files_times(all_paths(store))
    finally:
        fresh.close()


def test_a_closed_index_stops_its_rebuild_without_writing(repo: Path, history: StateStore) -> None:
    append_commits(repo, [{"tasks/a.yaml": f"a: {n}\n"} for n in range(3000)], 1_700_000_000)
    store = GitStore(repo)
    index = FileTimesIndex(store, history.file_times)
    index.follow(store.head())

    index.close()

    assert not index.rebuilding
    assert history.file_times.file_times_revision() is None


def test_the_newest_change_and_the_oldest_creation_count() -> None:
    newest_first = [
        FileChanges(T[3], ("a", "b"), ("b",), ()),
        FileChanges(T[2], (), (), ("b",)),
        FileChanges(T[1], ("a", "b"), ("a", "b"), ()),
    ]
    assert fold_changes(newest_first) == ({"a": T[3], "b": T[3]}, {"a": T[1], "b": T[1]}, {"b"})


def test_known_rows_keep_their_creation_and_removed_paths_their_times() -> None:
    known = {
        "a": IndexedFileTimes(T[1], T[2], True),
        "gone": IndexedFileTimes(T[1], T[3], True),
    }
    rows = merge_rows(
        {"a": T[5], "new": T[6]}, {"new": T[6]}, ["a", "new", "gone"], {"a", "new"}, known
    )
    assert rows == {
        "a": IndexedFileTimes(T[1], T[5], True),
        "new": IndexedFileTimes(T[6], T[6], True),
        "gone": IndexedFileTimes(T[1], T[3], False),
    }


# The task list, through the API


TASKS = 100


def many_tasks() -> dict[str, str]:
    files = configset.base_files()
    for task_id in range(1, TASKS + 1):
        files[f"tasks/{task_id}.yaml"] = configset.task(task_id)
    return files


@pytest.mark.anyio
async def test_the_first_list_after_a_commit_walks_no_history_at_2000_commits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Walking 2,000 commits took 3.2 s against 0.044 s at 10: the list's times come from the
    index, brought to each commit by its reconcile. bench/bench_api.py --history times it."""
    init_repo(tmp_path / "config", many_tasks())
    edits = [
        {f"tasks/{1 + n % TASKS}.yaml": configset.task(1 + n % TASKS, label=f"edit {n}")}
        for n in range(2000)
    ]
    append_commits(tmp_path / "config", edits, 1_700_000_000)
    async with api_rig(tmp_path, clone=True) as rig:
        deadline = time.monotonic() + 60
        while rig.state.file_times.file_times_revision() != rig.engine.revision:
            assert time.monotonic() < deadline, "the index was never built"
            await rig.engine.sync()
            time.sleep(0.05)
        walked: list[str] = []
        walk = rig.engine.store.files_times

        def counted(paths: Iterable[str]) -> dict[str, tuple[datetime, datetime] | None]:
            paths = list(paths)
            walked.extend(paths)
            return walk(paths)

        monkeypatch.setattr(rig.engine.store, "files_times", counted)
        commit_files(rig.repo, {"tasks/1.yaml": configset.task(1, label="new")}, "one more")
        await rig.engine.sync()
        response = await rig.get("/api/backup-tasks", params={"per_page": TASKS})
        assert response.status_code == 200
        listed = response.json()["data"]
        assert len(listed) == TASKS
        assert listed[0]["label"] == "new"
        assert walked == []


def test_renames_through_the_git_cli_are_new_files(repo: Path, history: StateStore) -> None:
    rename(repo, "tasks/a.yaml", "tasks/moved.yaml", "move a")
    store = GitStore(repo)
    index = FileTimesIndex(store, history.file_times)
    index.follow(store.head())
    wait_for_index(index)
    moved = datetime.fromtimestamp(int(git(repo, "log", "-1", "--format=%ct")), UTC)
    assert index.times(["tasks/moved.yaml"])["tasks/moved.yaml"] == (moved, moved)
