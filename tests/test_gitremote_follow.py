"""Following a remote's branch with the git CLI: cloning, fast-forwards, rebases, rewrites.

Real bare repositories over file://, a person's clone pushing to them, the daemon's clone
committing with GitStore.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.gitremote import (
    SET_ASIDE_PREFIX,
    check_clone,
    ensure_clone,
    follow,
    redact,
    scrub,
)
from reconciler.gitstore import Author, GitError, GitStore
from tests.gitrepo import (
    commit_files,
    git,
    head,
    person_pushes,
    shared_with_a_remote,
    work_tree_status,
)

AUTHOR = Author("Ada Admin", "ada@example.com")
NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


@pytest.fixture
def person(tmp_path: Path) -> Path:
    """A person's repository, pushed to the bare `tmp_path/upstream.git`."""
    repo = tmp_path / "person"
    files = {"tasks/a.yaml": "id: 1\nlabel: first\n", "users.yaml": "users: []\n"}
    shared_with_a_remote(repo, files, tmp_path / "upstream.git")
    return repo


@pytest.fixture
def url(tmp_path: Path, person: Path) -> str:
    return f"file://{tmp_path / 'upstream.git'}"


@pytest.fixture
def clone(tmp_path: Path, url: str) -> Path:
    directory = tmp_path / "daemon"
    assert ensure_clone(directory, url, "main")
    return directory


def upstream_head(tmp_path: Path) -> str:
    return git(tmp_path / "upstream.git", "rev-parse", "main").strip()


def api_commits(clone: Path, files: dict[str, bytes | None], message: str = "api") -> str:
    store = GitStore(clone)
    return store.commit(files, AUTHOR, message, NOW, parent=store.head())


def test_a_missing_directory_is_cloned_with_the_branch_checked_out(
    clone: Path, person: Path
) -> None:
    assert head(clone) == head(person)
    assert (clone / "tasks" / "a.yaml").read_text() == "id: 1\nlabel: first\n"
    assert git(clone, "symbolic-ref", "HEAD").strip() == "refs/heads/main"


def test_an_empty_directory_is_cloned_into(tmp_path: Path, url: str, person: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert ensure_clone(tmp_path / "empty", url, "main")
    assert head(tmp_path / "empty") == head(person)


def test_an_existing_clone_of_the_url_is_used_as_it_is(clone: Path, url: str) -> None:
    assert not ensure_clone(clone, url, "main")


def test_a_clone_of_another_remote_is_refused_in_one_sentence(tmp_path: Path, clone: Path) -> None:
    other = "https://ada:s3cret@git.example.com/other.git"
    with pytest.raises(GitError) as refused:
        ensure_clone(clone, other, "main")
    message = str(refused.value)
    assert "is a clone with origin file://" in message
    assert "not of https://git.example.com/other.git" in message
    assert "s3cret" not in message
    assert "\n" not in message


def test_new_credentials_for_the_same_remote_are_taken_into_the_clone(
    tmp_path: Path, person: Path
) -> None:
    bare = tmp_path / "upstream.git"
    old, new = f"file://ada:old@localhost{bare}", f"file://ada:new@localhost{bare}"
    git(tmp_path, "clone", "-q", f"file://{bare}", str(tmp_path / "daemon"))
    git(tmp_path / "daemon", "remote", "set-url", "origin", old)

    assert not ensure_clone(tmp_path / "daemon", new, "main")

    assert git(tmp_path / "daemon", "remote", "get-url", "origin").strip() == new


def test_a_directory_that_is_no_clone_is_refused(tmp_path: Path, url: str) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine\n")
    with pytest.raises(GitError, match="is not empty and not a git clone of file://"):
        ensure_clone(tmp_path / "full", url, "main")


def test_a_clone_with_another_branch_checked_out_is_refused(clone: Path, url: str) -> None:
    with pytest.raises(GitError, match="has main checked out, not prod"):
        check_clone(clone, url, "prod")


def test_a_clone_that_fails_names_the_remote_without_credentials(tmp_path: Path) -> None:
    url = f"file://ada:s3cret@localhost{tmp_path}/missing.git"
    with pytest.raises(GitError, match=r"^cannot clone file://ada@localhost") as failed:
        ensure_clone(tmp_path / "daemon", url, "main")
    assert "s3cret" not in str(failed.value)


def test_a_persons_push_is_fast_forwarded_with_the_work_tree(
    tmp_path: Path, person: Path, clone: Path
) -> None:
    before = head(clone)
    pushed = person_pushes(person, {"tasks/b.yaml": "id: 2\n"})

    followed = follow(clone, "main", NOW)

    assert (followed.before, followed.head) == (before, pushed)
    assert not followed.rewritten
    assert not followed.pushed
    assert followed.set_aside is None
    assert head(clone) == pushed
    assert (clone / "tasks" / "b.yaml").read_text() == "id: 2\n"
    assert work_tree_status(clone) == ""


def test_nothing_new_moves_nothing(clone: Path) -> None:
    before = head(clone)
    followed = follow(clone, "main", NOW)
    assert followed.head == followed.before == before


def test_our_commit_is_pushed(tmp_path: Path, clone: Path) -> None:
    ours = api_commits(clone, {"tasks/c.yaml": b"id: 3\n"})

    followed = follow(clone, "main", NOW)

    assert followed.pushed
    assert upstream_head(tmp_path) == ours == followed.head


def test_our_commit_is_rebased_onto_a_persons_and_pushed(
    tmp_path: Path, person: Path, clone: Path
) -> None:
    theirs = person_pushes(person, {"tasks/b.yaml": "id: 2\n"})
    api_commits(clone, {"tasks/c.yaml": b"id: 3\n"}, "api: add c")

    followed = follow(clone, "main", NOW)

    assert followed.pushed
    assert upstream_head(tmp_path) == head(clone)
    assert git(clone, "rev-parse", "HEAD^").strip() == theirs
    assert git(clone, "log", "-1", "--format=%an|%s").strip() == "Ada Admin|api: add c"
    assert sorted(p.name for p in (clone / "tasks").iterdir()) == ["a.yaml", "b.yaml", "c.yaml"]


def test_a_conflicting_commit_of_ours_is_kept_aside_and_the_person_wins(
    tmp_path: Path, person: Path, clone: Path
) -> None:
    theirs = person_pushes(person, {"tasks/a.yaml": "id: 1\nlabel: theirs\n"})
    ours = api_commits(clone, {"tasks/a.yaml": b"id: 1\nlabel: ours\n"})

    followed = follow(clone, "main", NOW)

    kept = followed.set_aside
    assert kept is not None
    assert kept.ref.startswith(SET_ASIDE_PREFIX)
    assert kept.commits == (ours,)
    assert "tasks/a.yaml" in kept.reason
    assert git(clone, "rev-parse", kept.ref).strip() == ours
    assert head(clone) == theirs == upstream_head(tmp_path)
    assert (clone / "tasks" / "a.yaml").read_text() == "id: 1\nlabel: theirs\n"
    assert work_tree_status(clone) == ""


def test_a_force_push_is_followed_and_what_it_dropped_is_gone(
    tmp_path: Path, person: Path, clone: Path
) -> None:
    dropped = person_pushes(person, {"tasks/b.yaml": "id: 2\n"}, "a mistake")
    follow(clone, "main", NOW)
    git(person, "reset", "-q", "--hard", "HEAD^")
    rewritten = commit_files(person, {"tasks/d.yaml": "id: 4\n"}, "instead")
    git(person, "push", "-q", "--force", "origin", "main")

    followed = follow(clone, "main", NOW)

    assert followed.rewritten
    assert (followed.before, followed.head) == (dropped, rewritten)
    assert head(clone) == rewritten
    assert not (clone / "tasks" / "b.yaml").exists()
    assert (clone / "tasks" / "d.yaml").read_text() == "id: 4\n"
    assert work_tree_status(clone) == ""


def test_after_a_force_push_our_unpushed_commit_is_replayed_onto_the_new_history(
    tmp_path: Path, person: Path, clone: Path
) -> None:
    person_pushes(person, {"tasks/b.yaml": "id: 2\n"}, "a mistake")
    follow(clone, "main", NOW)
    api_commits(clone, {"tasks/c.yaml": b"id: 3\n"}, "api: add c")
    git(person, "reset", "-q", "--hard", "HEAD^")
    rewritten = commit_files(person, {"tasks/d.yaml": "id: 4\n"}, "instead")
    git(person, "push", "-q", "--force", "origin", "main")

    followed = follow(clone, "main", NOW)

    assert followed.rewritten
    assert followed.pushed
    assert followed.set_aside is None
    assert git(clone, "log", "--format=%s", "-3").splitlines() == [
        "api: add c",
        "instead",
        "initial",
    ]
    assert git(clone, "rev-parse", "HEAD^").strip() == rewritten
    assert upstream_head(tmp_path) == head(clone)
    assert not (clone / "tasks" / "b.yaml").exists()


def test_a_force_push_back_to_an_older_commit_is_followed_and_never_pushed_over(
    tmp_path: Path, person: Path, clone: Path
) -> None:
    older = head(person)
    dropped = person_pushes(person, {"tasks/b.yaml": "id: 2\n"}, "a mistake")
    follow(clone, "main", NOW)
    git(person, "push", "-q", "--force", "origin", f"{older}:main")

    followed = follow(clone, "main", NOW)

    assert followed.rewritten
    assert not followed.pushed
    assert (followed.before, followed.head) == (dropped, older)
    assert head(clone) == older == upstream_head(tmp_path)
    assert not (clone / "tasks" / "b.yaml").exists()
    assert work_tree_status(clone) == ""


def test_after_a_force_push_back_our_unpushed_commit_is_replayed_without_what_it_dropped(
    tmp_path: Path, person: Path, clone: Path
) -> None:
    older = head(person)
    person_pushes(person, {"tasks/b.yaml": "id: 2\n"}, "a mistake")
    follow(clone, "main", NOW)
    api_commits(clone, {"tasks/c.yaml": b"id: 3\n"}, "api: add c")
    git(person, "push", "-q", "--force", "origin", f"{older}:main")

    followed = follow(clone, "main", NOW)

    assert followed.pushed
    assert git(clone, "log", "--format=%s").splitlines() == ["api: add c", "initial"]
    assert upstream_head(tmp_path) == head(clone)
    assert not (clone / "tasks" / "b.yaml").exists()


def test_after_a_force_push_an_unpushed_commit_that_no_longer_applies_is_kept_aside(
    tmp_path: Path, person: Path, clone: Path
) -> None:
    ours = api_commits(clone, {"tasks/a.yaml": b"id: 1\nlabel: ours\n"})
    (person / "tasks" / "a.yaml").write_text("id: 1\nlabel: rewritten\n")
    git(person, "commit", "-qa", "--amend", "-m", "initial, amended")
    rewritten = head(person)
    git(person, "push", "-q", "--force", "origin", "main")

    followed = follow(clone, "main", NOW)

    assert followed.rewritten
    assert followed.set_aside is not None
    assert followed.set_aside.commits == (ours,)
    assert head(clone) == rewritten == upstream_head(tmp_path)
    assert git(clone, "show", f"{followed.set_aside.ref}:tasks/a.yaml") == "id: 1\nlabel: ours\n"


def test_a_fetch_that_fails_moves_nothing(tmp_path: Path, clone: Path) -> None:
    before = head(clone)
    (tmp_path / "upstream.git").rename(tmp_path / "gone.git")

    with pytest.raises(GitError, match="git fetch"):
        follow(clone, "main", NOW)

    assert head(clone) == before
    assert work_tree_status(clone) == ""


def test_redact_takes_the_password_and_an_http_user_out() -> None:
    assert redact("https://ada:tok@git.example.com/x.git") == "https://git.example.com/x.git"
    assert redact("https://tok@git.example.com:8443/x") == "https://git.example.com:8443/x"
    assert redact("ssh://git:pw@git.example.com/x") == "ssh://git@git.example.com/x"
    assert redact("ssh://git@git.example.com/x") == "ssh://git@git.example.com/x"
    assert redact("git@git.example.com:team/config.git") == "git@git.example.com:team/config.git"
    assert redact("file:///srv/config.git") == "file:///srv/config.git"


@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=6, max_size=20))
def test_scrub_leaves_no_password_in_git_output(password: str) -> None:
    url = f"https://ada:{password}@git.example.com/config.git"
    output = f"fatal: unable to access '{url}': Could not resolve host; {password}"
    assert password not in scrub(output, url)
