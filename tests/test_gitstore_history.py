"""GitStore's history reads: the commits since a revision, and what one commit did to the files."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from reconciler.gitstore import Author, GitStore
from tests.gitrepo import append_commits, commit_files, git, head, init_repo


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "config"
    init_repo(path, {"tasks/a.yaml": "id: 1\n"})
    return path


def rev_list(repo: Path, old: str, new: str) -> list[str]:
    return git(repo, "rev-list", "--topo-order", new, f"^{old}").split()


def test_the_commits_since_an_ancestor_are_listed_newest_first(repo: Path) -> None:
    old = head(repo)
    for number in range(3):
        commit_files(repo, {"tasks/a.yaml": f"id: 1\nlabel: l{number}\n"}, f"edit {number}")
    assert GitStore(repo).commits_since(old, head(repo)) == rev_list(repo, old, head(repo))


def test_a_line_longer_than_the_quick_path_is_listed_whole(repo: Path) -> None:
    old = head(repo)
    append_commits(repo, [{"tasks/a.yaml": f"id: 1\nlabel: {n}\n"} for n in range(100)], 1)
    since = GitStore(repo).commits_since(old, head(repo))
    assert since == rev_list(repo, old, head(repo))
    assert len(since) == 100


def test_the_commits_since_a_revision_before_a_merge_include_the_branchs(repo: Path) -> None:
    old = head(repo)
    git(repo, "checkout", "-q", "-b", "side")
    commit_files(repo, {"tasks/b.yaml": "id: 2\n"}, "on the side")
    git(repo, "checkout", "-q", "main")
    commit_files(repo, {"tasks/c.yaml": "id: 3\n"}, "on main")
    git(repo, "merge", "-q", "--no-ff", "-m", "merge", "side")
    since = GitStore(repo).commits_since(old, head(repo))
    assert since is not None
    assert sorted(since) == sorted(rev_list(repo, old, head(repo)))
    assert since[0] == head(repo)


def test_a_revision_that_is_not_an_ancestor_has_no_commits_since(repo: Path) -> None:
    commit_files(repo, {"tasks/a.yaml": "id: 1\nlabel: dropped\n"}, "dropped")
    dropped = head(repo)
    git(repo, "reset", "-q", "--hard", "HEAD~1")
    commit_files(repo, {"tasks/a.yaml": "id: 1\nlabel: kept\n"}, "kept")
    assert GitStore(repo).commits_since(dropped, head(repo)) is None
    assert GitStore(repo).commits_since(head(repo), head(repo)) == []


def test_a_commits_files_are_its_changed_yaml_paths_with_their_blobs_before_and_after(
    repo: Path,
) -> None:
    before = git(repo, "rev-parse", "HEAD:tasks/a.yaml").strip()
    files = {"tasks/a.yaml": None, "tasks/b.yaml": "id: 2\n", "README.md": "hi\n"}
    commit_files(repo, files, "swap")
    changes = GitStore(repo).commit_files(head(repo))
    after = git(repo, "rev-parse", "HEAD:tasks/b.yaml").strip()
    assert changes.files == {"tasks/a.yaml": (before, None), "tasks/b.yaml": (None, after)}
    assert changes.commit.sha == head(repo)
    assert changes.commit.author == Author("Test Author", "test@example.com")
    assert changes.commit.message == "swap\n"


def test_an_author_name_that_is_not_utf8_is_read_with_replacement_characters(
    repo: Path,
) -> None:
    raw = git(repo, "cat-file", "commit", "HEAD").encode()
    # An old git on a latin-1 terminal: the name's bytes are not UTF-8.
    latin1 = raw.replace(b"Test Author", "J\u00e9r\u00f4me".encode("latin-1"))
    written = subprocess.run(
        ["git", "hash-object", "-t", "commit", "-w", "--stdin"],
        cwd=repo, input=latin1, capture_output=True, check=True,
    ).stdout.decode().strip()  # fmt: skip
    assert GitStore(repo).commit_files(written).commit.author.name == "J\ufffdr\ufffdme"
