"""A chain of commits: one commit per change, each on the one before, landed in one step."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from reconciler.gitstore import (
    Author,
    BranchMovedError,
    Change,
    DirtyFileError,
    GitError,
    GitStore,
    RefusedChangeError,
)
from tests.gitrepo import assert_repaired_after_kills, commit_files, git, head, init_repo

ADA = Author("Ada Admin", "ada@example.com")
GRACE = Author("Grace Hopper", "grace@example.com")
NOW = datetime(2024, 5, 1, 9, 30, tzinfo=UTC)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "config"
    init_repo(path, {"tasks/a.yaml": "id: 1\n", "tasks/b.yaml": "id: 2\n"})
    return path


def _log(repo: Path, count: int) -> list[list[str]]:
    """[sha, parent, author, author time, subject] of the newest `count` commits, oldest first."""
    lines = git(repo, "log", f"-{count}", "--format=%H%x00%P%x00%an%x00%aI%x00%s").splitlines()
    return [line.split("\0") for line in reversed(lines)]


def _reflog_moves(repo: Path) -> int:
    return len(git(repo, "reflog", "show", "--format=%H", "main").splitlines())


def test_each_change_is_its_own_commit_on_the_one_before(repo: Path) -> None:
    base, moves = head(repo), _reflog_moves(repo)
    later = NOW + timedelta(seconds=1)
    shas = GitStore(repo).commit_chain(
        [
            Change({"tasks/a.yaml": b"id: 1\nlabel: x\n"}, ADA, "edit a", NOW),
            Change({"tasks/c.yaml": b"id: 3\n"}, GRACE, "add c", later),
            Change({"tasks/b.yaml": None}, ADA, "delete b", later),
        ],
        parent=base,
    )
    assert _log(repo, 3) == [
        [shas[0], base, "Ada Admin", "2024-05-01T09:30:00+00:00", "edit a"],
        [shas[1], shas[0], "Grace Hopper", "2024-05-01T09:30:01+00:00", "add c"],
        [shas[2], shas[1], "Ada Admin", "2024-05-01T09:30:01+00:00", "delete b"],
    ]
    assert head(repo) == shas[2]
    assert _reflog_moves(repo) - moves == 1
    assert git(repo, "show", f"{shas[1]}:tasks/c.yaml") == "id: 3\n"
    assert git(repo, "ls-tree", "--name-only", f"{shas[1]}", "tasks/") == (
        "tasks/a.yaml\ntasks/b.yaml\ntasks/c.yaml\n"
    )
    assert (repo / "tasks/a.yaml").read_text() == "id: 1\nlabel: x\n"
    assert not (repo / "tasks/b.yaml").exists()
    assert git(repo, "status", "--porcelain", "--untracked-files=all") == ""


def test_a_later_change_to_the_same_file_builds_on_the_earlier_one(repo: Path) -> None:
    shas = GitStore(repo).commit_chain(
        [
            Change({"tasks/a.yaml": b"id: 1\nlabel: first\n"}, ADA, "first", NOW),
            Change({"tasks/a.yaml": b"id: 1\nlabel: second\n"}, ADA, "second", NOW),
        ],
        parent=head(repo),
    )
    assert git(repo, "show", f"{shas[0]}:tasks/a.yaml") == "id: 1\nlabel: first\n"
    assert (repo / "tasks/a.yaml").read_text() == "id: 1\nlabel: second\n"
    assert git(repo, "status", "--porcelain", "--untracked-files=all") == ""


def test_a_change_that_changes_nothing_lands_in_the_commit_before_it(repo: Path) -> None:
    base = head(repo)
    shas = GitStore(repo).commit_chain(
        [
            Change({"tasks/a.yaml": b"id: 1\n"}, ADA, "same bytes", NOW),
            Change({"tasks/b.yaml": b"id: 2\nlabel: y\n"}, ADA, "edit b", NOW),
        ],
        parent=base,
    )
    assert shas[0] == base
    assert _log(repo, 1)[0][1] == base


def test_a_refused_change_is_named_and_nothing_is_written(repo: Path) -> None:
    base = head(repo)
    (repo / "tasks/b.yaml").write_text("id: 2\n# by hand\n")
    with pytest.raises(RefusedChangeError) as refused:
        GitStore(repo).commit_chain(
            [
                Change({"tasks/a.yaml": b"id: 1\nlabel: x\n"}, ADA, "edit a", NOW),
                Change({"tasks/b.yaml": b"id: 2\nlabel: y\n"}, ADA, "edit b", NOW),
            ],
            parent=base,
        )
    assert refused.value.index == 1
    assert isinstance(refused.value.error, DirtyFileError)
    assert head(repo) == base
    assert (repo / "tasks/a.yaml").read_text() == "id: 1\n"
    assert git(repo, "status", "--porcelain") == " M tasks/b.yaml\n"


def test_a_file_where_an_earlier_change_made_a_folder_is_refused(repo: Path) -> None:
    base = head(repo)
    with pytest.raises(RefusedChangeError) as refused:
        GitStore(repo).commit_chain(
            [
                Change({"tasks/d.yaml/e.yaml": b"id: 5\n"}, ADA, "folder d.yaml", NOW),
                Change({"tasks/d.yaml": b"id: 4\n"}, ADA, "file d.yaml", NOW),
            ],
            parent=base,
        )
    assert refused.value.index == 1
    assert isinstance(refused.value.error, GitError)
    assert head(repo) == base
    assert not (repo / "tasks/d.yaml").exists()


def test_a_chain_prepared_from_an_older_head_is_refused_whole(repo: Path) -> None:
    base = head(repo)
    commit_files(repo, {"tasks/b.yaml": "id: 2\nlabel: person\n"}, "person")
    with pytest.raises(BranchMovedError):
        GitStore(repo).commit_chain(
            [Change({"tasks/a.yaml": b"id: 1\nlabel: x\n"}, ADA, "edit a", NOW)], parent=base
        )
    assert (repo / "tasks/a.yaml").read_text() == "id: 1\n"


_CHAIN_FOREVER = textwrap.dedent(
    """
    import sys
    from datetime import UTC, datetime
    from pathlib import Path
    from reconciler.gitstore import Author, Change, GitStore

    store = GitStore(Path(sys.argv[1]))
    author = Author("api", "api@example.com")
    for number in range(1_000_000):
        body = f"id: 1\\nlabel: edit {number}\\n" + "# padding\\n" * 20_000
        now = datetime.now(UTC)
        changes = [
            Change({"tasks/a.yaml": body.encode()}, author, f"edit {number}", now),
            Change({f"tasks/new-{number}.yaml": b"id: 2\\n"}, author, f"add {number}", now),
            Change({"tasks/a.yaml": body.encode() + b"# again\\n"}, author, "again", now),
        ]
        store.commit_chain(changes, parent=store.head())
        print(number, flush=True)
    """
)


def test_a_chain_killed_at_any_point_is_repaired_to_a_clean_work_tree(repo: Path) -> None:
    assert_repaired_after_kills(repo, _CHAIN_FOREVER, trials=6, seed=11)
