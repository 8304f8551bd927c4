from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pygit2
import pytest

from reconciler import gitstore
from reconciler.gitstore import (
    Author,
    BranchMovedError,
    DirtyFileError,
    GitError,
    GitStore,
    TreeEntry,
)
from tests.gitrepo import (
    commit_files,
    commit_symlink,
    git,
    head,
    init_repo,
    rename,
    small_config_repo,
    work_tree_status,
)

AUTHOR = Author("Ada Admin", "ada@example.com")
NOW = datetime(2024, 5, 1, 9, 30, tzinfo=UTC)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return small_config_repo(tmp_path)


@pytest.fixture
def nested(tmp_path: Path) -> Path:
    """A larger repository whose config set is the folder `deploy/backups`."""
    path = tmp_path / "monorepo"
    init_repo(
        path,
        {
            "app/config.yaml": "outside: true\n",
            "deploy/backups/tasks/a.yaml": "id: 1\n",
            "deploy/backups/users.yml": "users: []\n",
        },
    )
    return path


# Opening


def test_a_folder_outside_any_repository_is_refused(tmp_path: Path) -> None:
    with pytest.raises(GitError, match="not inside a git repository"):
        GitStore(tmp_path)


def test_the_repository_root_is_a_config_set_without_prefix(repo: Path) -> None:
    store = GitStore(repo)

    assert (store.root, store.prefix, store.git_dir) == (repo, "", repo / ".git")


def test_a_folder_inside_a_larger_repository_has_a_prefix(nested: Path) -> None:
    store = GitStore(nested / "deploy" / "backups")

    assert (store.root, store.prefix) == (nested, "deploy/backups/")


def test_head_is_the_checked_out_commit(repo: Path) -> None:
    assert GitStore(repo).head() == head(repo)


def test_head_of_an_unborn_branch_is_none(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q", "-b", "main")

    assert GitStore(tmp_path).head() is None


# Reading


def test_list_files_gives_yaml_files_with_their_blob_ids(repo: Path) -> None:
    files = GitStore(repo).list_files(head(repo))

    assert files == {
        "tasks/a.yaml": git(repo, "rev-parse", "HEAD:tasks/a.yaml").strip(),
        "users.yaml": git(repo, "rev-parse", "HEAD:users.yaml").strip(),
    }


def test_list_files_of_a_nested_config_set_are_relative_to_it(nested: Path) -> None:
    files = GitStore(nested / "deploy" / "backups").list_files("HEAD")

    assert set(files) == {"tasks/a.yaml", "users.yml"}


def test_list_files_reads_the_commit_not_the_work_tree(repo: Path) -> None:
    first = head(repo)
    commit_files(repo, {"tasks/b.yaml": "id: 2\n"}, "add b")
    (repo / "tasks" / "c.yaml").write_text("id: 3\n")

    store = GitStore(repo)

    assert set(store.list_files(first)) == {"tasks/a.yaml", "users.yaml"}
    assert set(store.list_files("HEAD")) == {"tasks/a.yaml", "tasks/b.yaml", "users.yaml"}


def test_list_entries_gives_symbolic_links_of_any_name_as_links(repo: Path) -> None:
    commit_symlink(repo, "tasks/shadow.yaml", "/etc/shadow", "link a file")
    commit_symlink(repo, "shared", "../elsewhere", "link a folder")
    entries = GitStore(repo).list_entries("HEAD")
    assert entries["tasks/shadow.yaml"].symlink
    assert entries["shared"].symlink
    assert not entries["tasks/a.yaml"].symlink


def test_list_files_leaves_symbolic_links_out(repo: Path) -> None:
    commit_symlink(repo, "tasks/shadow.yaml", "/etc/shadow", "link a file")
    assert "tasks/shadow.yaml" not in GitStore(repo).list_files("HEAD")


def test_changed_files_gives_a_file_that_became_a_link_as_a_link(repo: Path) -> None:
    old = head(repo)
    git(repo, "rm", "-q", "tasks/a.yaml")
    new = commit_symlink(repo, "tasks/a.yaml", "/etc/passwd", "a becomes a link")
    (entry,) = GitStore(repo).changed_files(old, new).values()
    assert entry is not None
    assert entry.symlink


def test_changed_files_gives_a_removed_link_as_none(repo: Path) -> None:
    old = commit_symlink(repo, "shared", "../elsewhere", "link a folder")
    git(repo, "rm", "-q", "shared")
    git(repo, "commit", "-q", "-m", "unlink")
    assert GitStore(repo).changed_files(old, head(repo)) == {"shared": None}


def test_blob_sizes_are_read_from_the_object_headers(repo: Path) -> None:
    store = GitStore(repo)
    files = store.list_files("HEAD")
    sizes = store.blob_sizes(files.values())
    assert sizes[files["users.yaml"]] == len((repo / "users.yaml").read_bytes())


def test_an_unknown_revision_is_a_git_error(repo: Path) -> None:
    with pytest.raises(GitError, match="not a commit"):
        GitStore(repo).list_files("0" * 40)


def test_list_files_lists_ten_thousand_files_in_nested_folders(tmp_path: Path) -> None:
    """Its speed is measured by bench/bench_core.py (`list_entries_10000_ms`)."""
    path = tmp_path / "big"
    init_repo(path, {})
    for group in range(100):
        folder = path / "tasks" / f"g{group:03d}"
        folder.mkdir(parents=True)
        for task in range(100):
            (folder / f"t{task:03d}.yaml").write_text(f"id: {group * 100 + task + 1}\n")
    git(path, "add", "tasks")
    git(path, "commit", "-q", "-m", "ten thousand tasks")
    store = GitStore(path)

    files = store.list_files("HEAD")

    assert len(files) == 10_000
    assert files.keys() == {
        f"tasks/g{group:03d}/t{task:03d}.yaml" for group in range(100) for task in range(100)
    }


def test_changed_files_lists_added_modified_deleted_and_renamed_yaml(repo: Path) -> None:
    commit_files(repo, {"tasks/b.yaml": "id: 2\n", "tasks/c.yaml": "id: 3\n"}, "more")
    old = head(repo)
    commit_files(
        repo,
        {
            "tasks/a.yaml": "id: 1\nlabel: x\n",
            "tasks/b.yaml": None,
            "tasks/d.yml": "id: 4\n",
            "README.md": "changed\n",
        },
        "edit",
    )
    new = rename(repo, "tasks/c.yaml", "tasks/moved/c.yaml", "move")

    changed = set(GitStore(repo).changed_files(old, new))

    assert changed == {
        "tasks/a.yaml",
        "tasks/b.yaml",
        "tasks/d.yml",
        "tasks/c.yaml",
        "tasks/moved/c.yaml",
    }


def test_changed_files_gives_each_new_entry_and_none_for_a_deleted_file(repo: Path) -> None:
    commit_files(repo, {"tasks/b.yaml": "id: 2\n"}, "add b")
    old = head(repo)
    new = commit_files(repo, {"tasks/a.yaml": "id: 1\nlabel: y\n", "tasks/b.yaml": None}, "edit")
    store = GitStore(repo)

    changes = store.changed_files(old, new)

    blob = store.list_files(new)["tasks/a.yaml"]
    assert changes == {"tasks/a.yaml": TreeEntry(blob), "tasks/b.yaml": None}


def test_changed_files_ignores_changes_outside_the_config_set(nested: Path) -> None:
    old = head(nested)
    new = commit_files(
        nested,
        {"app/config.yaml": "outside: false\n", "deploy/backups/tasks/a.yaml": "id: 1\n#\n"},
        "edit both",
    )

    assert set(GitStore(nested / "deploy" / "backups").changed_files(old, new)) == {"tasks/a.yaml"}


def test_changed_files_of_identical_commits_is_empty(repo: Path) -> None:
    assert GitStore(repo).changed_files("HEAD", "HEAD") == {}


def test_read_blobs_returns_the_content_of_each_blob(repo: Path) -> None:
    store = GitStore(repo)
    files = store.list_files("HEAD")

    blobs = store.read_blobs(files.values())

    assert blobs == {
        files["tasks/a.yaml"]: b"id: 1\n",
        files["users.yaml"]: b"users: []\n",
    }


def test_reading_an_unknown_blob_is_a_git_error(repo: Path) -> None:
    with pytest.raises(GitError, match="not in"):
        GitStore(repo).read_blobs(["1" * 40])


# Committing


def test_a_commit_writes_stages_and_commits_the_files(repo: Path) -> None:
    store = GitStore(repo)
    before = head(repo)

    sha = store.commit(
        {"tasks/b.yaml": b"id: 2\n", "tasks/a.yaml": b"id: 1\npaused: true\n"},
        AUTHOR,
        "Add task 2, pause task 1",
        NOW,
        parent=store.head(),
    )

    assert sha == head(repo) == store.head()
    assert git(repo, "rev-parse", f"{sha}^").strip() == before
    assert (repo / "tasks" / "b.yaml").read_bytes() == b"id: 2\n"
    assert git(repo, "show", f"{sha}:tasks/a.yaml") == "id: 1\npaused: true\n"
    assert work_tree_status(repo) == ""


def test_a_commit_while_a_git_command_holds_the_index_lock_writes_nothing(repo: Path) -> None:
    store = GitStore(repo)
    before = head(repo)
    (repo / ".git/index.lock").write_bytes(b"")  # a person's git command, still running

    with pytest.raises(GitError, match="another git process"):
        store.commit({"tasks/a.yaml": b"id: 1\npaused: true\n"}, AUTHOR, "m", NOW, parent=before)

    assert (repo / "tasks/a.yaml").read_text() == "id: 1\n"
    assert head(repo) == before
    assert (repo / ".git/index.lock").exists()  # theirs: left alone
    (repo / ".git/index.lock").unlink()
    assert work_tree_status(repo) == ""


def test_a_commit_waits_for_a_git_command_that_releases_the_index_lock(repo: Path) -> None:
    store = GitStore(repo)
    lock = repo / ".git/index.lock"
    lock.write_bytes(b"")
    threading.Timer(0.1, lock.unlink).start()

    sha = store.commit({"tasks/a.yaml": b"id: 2\n"}, AUTHOR, "m", NOW, parent=store.head())

    assert sha == head(repo)
    assert work_tree_status(repo) == ""


def test_a_persons_git_commit_while_the_store_commits_is_refused_by_git_itself(
    repo: Path,
) -> None:
    """While a commit holds git's index lock, `git commit` says so instead of interleaving."""
    store = GitStore(repo)
    (repo / "users.yaml").write_text("users: [1]\n")
    refused: list[str] = []
    real_stage = store._stage

    def stage_then_person_commits(*args: Any) -> None:
        real_stage(*args)
        try:
            git(repo, "commit", "-q", "-am", "person")
        except RuntimeError as error:
            refused.append(str(error))

    store._stage = stage_then_person_commits  # type: ignore[method-assign,assignment]
    sha = store.commit({"tasks/a.yaml": b"id: 2\n"}, AUTHOR, "api", NOW, parent=store.head())

    (error,) = refused
    assert "index.lock" in error
    assert sha == head(repo)
    assert (
        work_tree_status(repo) == " M users.yaml\n"
    )  # the person's edit, untouched, to commit again


def test_a_commit_records_author_committer_time_and_message(repo: Path) -> None:
    sha = GitStore(repo).commit(
        {"users.yaml": b"users: [1]\n"}, AUTHOR, "Edit users", NOW, parent=head(repo)
    )

    shown = git(repo, "show", "-s", "--format=%an|%ae|%cn|%ce|%at|%ct|%s", sha).strip()
    stamp = str(int(NOW.timestamp()))
    assert (
        shown == f"Ada Admin|ada@example.com|Ada Admin|ada@example.com|{stamp}|{stamp}|Edit users"
    )


def test_a_commit_in_a_nested_config_set_writes_under_its_folder(nested: Path) -> None:
    store = GitStore(nested / "deploy" / "backups")

    sha = store.commit({"tasks/b.yaml": b"id: 2\n"}, AUTHOR, "add", NOW, parent=store.head())

    assert git(nested, "show", f"{sha}:deploy/backups/tasks/b.yaml") == "id: 2\n"
    assert git(nested, "diff", "--name-only", f"{sha}^", sha).split() == [
        "deploy/backups/tasks/b.yaml"
    ]
    assert work_tree_status(nested) == ""


def test_a_none_write_deletes_the_file_and_its_empty_folder(repo: Path) -> None:
    GitStore(repo).commit({"tasks/a.yaml": None}, AUTHOR, "Delete task 1", NOW, parent=head(repo))

    assert not (repo / "tasks").exists()
    assert git(repo, "ls-files").split() == ["README.md", "users.yaml"]
    assert work_tree_status(repo) == ""


def test_writes_that_change_nothing_make_no_commit(repo: Path) -> None:
    before = head(repo)

    sha = GitStore(repo).commit(
        {"tasks/a.yaml": b"id: 1\n"}, AUTHOR, "noop", NOW, parent=head(repo)
    )

    assert sha == before == head(repo)


def test_a_commit_keeps_the_mode_of_an_executable_file(repo: Path) -> None:
    commit_files(repo, {"hook.yaml": "x: 1\n"}, "add")
    git(repo, "update-index", "--chmod=+x", "hook.yaml")
    (repo / "hook.yaml").chmod(0o755)
    git(repo, "commit", "-q", "-m", "chmod")

    sha = GitStore(repo).commit({"hook.yaml": b"x: 2\n"}, AUTHOR, "edit", NOW, parent=head(repo))

    assert git(repo, "ls-tree", sha, "hook.yaml").split()[0] == "100755"
    assert work_tree_status(repo) == ""


def test_the_first_commit_on_an_unborn_branch_has_no_parent(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q", "-b", "main")

    sha = GitStore(tmp_path).commit(
        {"users.yaml": b"users: []\n"}, AUTHOR, "first", NOW, parent=None
    )

    assert git(tmp_path, "rev-list", "--parents", "main").split() == [sha]
    assert work_tree_status(tmp_path) == ""


def test_a_commit_prepared_from_an_older_head_is_refused_and_writes_nothing(repo: Path) -> None:
    store = GitStore(repo)
    prepared_from = store.head()
    theirs = commit_files(repo, {"tasks/a.yaml": "id: 1\nlabel: theirs\n"}, "person")

    with pytest.raises(BranchMovedError):
        store.commit({"tasks/a.yaml": b"id: 1\n"}, AUTHOR, "stale", NOW, parent=prepared_from)

    assert head(repo) == theirs
    assert (repo / "tasks/a.yaml").read_text() == "id: 1\nlabel: theirs\n"
    assert work_tree_status(repo) == ""


def test_a_first_commit_is_refused_once_the_branch_has_one(tmp_path: Path) -> None:
    init_repo(tmp_path, {"users.yaml": "users: []\n"})

    with pytest.raises(BranchMovedError):
        GitStore(tmp_path).commit({"users.yaml": b"x: 1\n"}, AUTHOR, "first", NOW, parent=None)


@pytest.mark.parametrize(
    "path", ["../escape.yaml", "/etc/passwd", ".git/config", "a/../../b.yaml", "", "dir/"]
)
def test_paths_outside_the_config_set_are_refused(repo: Path, path: str) -> None:
    before = head(repo)

    with pytest.raises(GitError, match="not a relative file path"):
        GitStore(repo).commit({path: b"x"}, AUTHOR, "escape", NOW, parent=head(repo))
    assert head(repo) == before


def test_a_file_modified_in_the_work_tree_is_not_overwritten(repo: Path) -> None:
    (repo / "tasks" / "a.yaml").write_text("id: 1\n# my local edit\n")
    before = head(repo)

    with pytest.raises(DirtyFileError, match=r"tasks/a\.yaml"):
        GitStore(repo).commit(
            {"users.yaml": b"users: [2]\n", "tasks/a.yaml": b"id: 1\n"},
            AUTHOR,
            "edit",
            NOW,
            parent=head(repo),
        )

    assert head(repo) == before
    assert (repo / "tasks" / "a.yaml").read_text() == "id: 1\n# my local edit\n"
    assert (repo / "users.yaml").read_text() == "users: []\n"
    assert work_tree_status(repo) == " M tasks/a.yaml\n"


def test_a_staged_change_to_a_target_file_is_refused(repo: Path) -> None:
    (repo / "users.yaml").write_text("users: [9]\n")
    git(repo, "add", "users.yaml")
    (repo / "users.yaml").write_text("users: []\n")

    with pytest.raises(DirtyFileError, match="staged"):
        GitStore(repo).commit(
            {"users.yaml": b"users: [1]\n"}, AUTHOR, "edit", NOW, parent=head(repo)
        )


def test_an_untracked_file_in_the_way_is_refused(repo: Path) -> None:
    (repo / "tasks" / "new.yaml").write_text("mine\n")

    with pytest.raises(DirtyFileError, match=r"tasks/new\.yaml"):
        GitStore(repo).commit(
            {"tasks/new.yaml": b"theirs\n"}, AUTHOR, "add", NOW, parent=head(repo)
        )
    assert (repo / "tasks" / "new.yaml").read_text() == "mine\n"


@pytest.mark.parametrize("path", ["README.md/inside.yaml", "tasks"])
def test_a_file_cannot_replace_a_folder_or_become_one(repo: Path, path: str) -> None:
    (repo / "README.md").unlink()
    before = head(repo)

    with pytest.raises(GitError, match="a file and a folder"):
        GitStore(repo).commit({path: b"x: 1\n"}, AUTHOR, "clash", NOW, parent=head(repo))
    assert head(repo) == before


def test_other_local_work_is_left_alone_and_not_committed(repo: Path) -> None:
    (repo / "README.md").write_text("staged edit\n")
    git(repo, "add", "README.md")
    (repo / "tasks" / "draft.yaml").write_text("draft\n")

    sha = GitStore(repo).commit(
        {"users.yaml": b"users: [1]\n"}, AUTHOR, "edit", NOW, parent=head(repo)
    )

    assert git(repo, "diff", "--name-only", f"{sha}^", sha).split() == ["users.yaml"]
    assert work_tree_status(repo) == "M  README.md\n?? tasks/draft.yaml\n"


def test_a_failed_write_leaves_neither_files_nor_a_commit_behind(repo: Path) -> None:
    # An untracked regular file where the commit needs a folder: the second write cannot happen.
    (repo / "blocker").write_text("not a folder\n")
    before = head(repo)
    index_before = (repo / ".git" / "index").read_bytes()

    with pytest.raises(GitError, match="nothing was changed"):
        GitStore(repo).commit(
            {
                "tasks/a.yaml": b"id: 1\nchanged: yes\n",
                "new/b.yaml": b"b\n",
                "blocker/c.yaml": b"c\n",
            },
            AUTHOR,
            "doomed",
            NOW,
            parent=head(repo),
        )

    assert head(repo) == before
    assert (repo / "tasks" / "a.yaml").read_text() == "id: 1\n"
    assert not (repo / "new").exists()
    assert (repo / ".git" / "index").read_bytes() == index_before
    assert work_tree_status(repo) == "?? blocker\n"
    assert [p.name for p in (repo / "tasks").iterdir()] == ["a.yaml"]


def test_fifty_concurrent_committers_each_land_once_and_lose_nothing(repo: Path) -> None:
    store = GitStore(repo)
    errors: list[BaseException] = []

    def write(number: int) -> None:
        try:
            while True:  # as the API's writer does: prepare again from the new head
                try:
                    store.commit(
                        {f"tasks/t{number}.yaml": f"id: {number}\n".encode()},
                        AUTHOR,
                        f"task {number}",
                        NOW + timedelta(seconds=number),
                        parent=store.head(),
                    )
                    return
                except BranchMovedError:
                    continue
        except BaseException as exc:  # collected so the main thread can fail the test
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert git(repo, "rev-list", "--count", "HEAD").strip() == "51"
    assert git(repo, "rev-list", "--merges", "HEAD").strip() == ""
    assert len(store.list_files("HEAD")) == 52
    assert work_tree_status(repo) == ""


# File times


def test_file_times_are_when_a_file_was_added_and_last_changed(repo: Path) -> None:
    store = GitStore(repo)
    store.commit({"tasks/b.yaml": b"id: 2\n"}, AUTHOR, "add", NOW, parent=store.head())
    store.commit(
        {"users.yaml": b"users: [1]\n"},
        AUTHOR,
        "other",
        NOW + timedelta(hours=1),
        parent=store.head(),
    )
    store.commit(
        {"tasks/b.yaml": b"id: 2\nx: 1\n"},
        AUTHOR,
        "edit",
        NOW + timedelta(hours=2),
        parent=store.head(),
    )
    store.commit(
        {"users.yaml": b"users: [2]\n"},
        AUTHOR,
        "other",
        NOW + timedelta(hours=3),
        parent=store.head(),
    )

    assert store.file_times("tasks/b.yaml") == (NOW, NOW + timedelta(hours=2))


def test_file_times_follow_new_commits(repo: Path) -> None:
    store = GitStore(repo)
    store.commit({"tasks/b.yaml": b"id: 2\n"}, AUTHOR, "add", NOW, parent=store.head())
    assert store.file_times("tasks/b.yaml") == (NOW, NOW)

    later = NOW + timedelta(days=1)
    store.commit({"tasks/b.yaml": b"id: 2\nx: 1\n"}, AUTHOR, "edit", later, parent=store.head())

    assert store.file_times("tasks/b.yaml") == (NOW, later)


def test_file_times_at_a_revision_leave_out_the_commits_after_it(repo: Path) -> None:
    store = GitStore(repo)
    applied = store.commit({"tasks/b.yaml": b"id: 2\n"}, AUTHOR, "add", NOW, parent=store.head())
    later = NOW + timedelta(days=1)
    store.commit({"tasks/b.yaml": b"id: 2\nx: 1\n"}, AUTHOR, "edit", later, parent=applied)
    store.commit({"tasks/c.yaml": b"id: 3\n"}, AUTHOR, "add c", later, parent=store.head())

    assert store.files_times(["tasks/b.yaml", "tasks/c.yaml"], applied) == {
        "tasks/b.yaml": (NOW, NOW),
        "tasks/c.yaml": None,
    }


def test_times_of_several_files_match_each_files_own(repo: Path) -> None:
    store = GitStore(repo)
    store.commit({"tasks/x.yaml": b"id: 1\n"}, AUTHOR, "add x", NOW, parent=store.head())
    store.commit(
        {"tasks/y.yaml": b"id: 2\n"}, AUTHOR, "add y", NOW + timedelta(hours=1), parent=store.head()
    )

    assert store.files_times(["tasks/x.yaml", "tasks/y.yaml", "tasks/gone.yaml"]) == {
        "tasks/x.yaml": (NOW, NOW),
        "tasks/y.yaml": (NOW + timedelta(hours=1), NOW + timedelta(hours=1)),
        "tasks/gone.yaml": None,
    }


def test_a_renamed_file_was_created_by_the_rename(repo: Path) -> None:
    store = GitStore(repo)
    store.commit({"tasks/b.yaml": b"id: 2\n"}, AUTHOR, "add", NOW, parent=store.head())
    moved = NOW + timedelta(hours=5)
    store.commit(
        {"tasks/b.yaml": None, "tasks/renamed.yaml": b"id: 2\n"},
        AUTHOR,
        "rename",
        moved,
        parent=store.head(),
    )

    assert store.file_times("tasks/renamed.yaml") == (moved, moved)
    assert store.file_times("tasks/b.yaml") is None


def test_file_times_of_a_file_never_committed_is_none(repo: Path) -> None:
    (repo / "tasks" / "draft.yaml").write_text("draft\n")

    assert GitStore(repo).file_times("tasks/draft.yaml") is None


def test_file_times_in_a_nested_config_set(nested: Path) -> None:
    store = GitStore(nested / "deploy" / "backups")
    store.commit({"tasks/a.yaml": b"id: 1\n#\n"}, AUTHOR, "edit", NOW, parent=store.head())

    times = store.file_times("tasks/a.yaml")

    first = git(nested, "log", "-1", "--format=%ct", "HEAD^").strip()
    assert times == (datetime.fromtimestamp(int(first), UTC), NOW)


def test_file_times_read_each_commits_tree_once_per_path_and_then_come_from_the_cache(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = GitStore(repo)
    for number in range(300):
        store.commit(
            {f"tasks/t{number % 15}.yaml": f"id: {number}\n".encode()},
            AUTHOR,
            f"commit {number}",
            NOW + timedelta(minutes=number),
            parent=store.head(),
        )
    commits = len(git(repo, "rev-list", "HEAD").split())
    lookups: list[str] = []
    entry_id = gitstore._entry_id

    def counted(tree: pygit2.Tree | None, path: str) -> pygit2.Oid | None:
        lookups.append(path)
        return entry_id(tree, path)

    monkeypatch.setattr(gitstore, "_entry_id", counted)

    for number in range(15):
        assert store.file_times(f"tasks/t{number}.yaml") is not None
    # A walk looks a path up once per commit, however many parents point at it.
    assert len(lookups) <= 15 * commits
    assert max(lookups.count(f"tasks/t{number}.yaml") for number in range(15)) <= commits

    lookups.clear()
    for number in range(15):
        assert store.file_times(f"tasks/t{number}.yaml") is not None
    assert lookups == []  # the same head again: no walk at all


def test_files_added_walks_only_commits_not_seen_before(repo: Path) -> None:
    store = GitStore(repo)
    commit_files(repo, {"tasks/b.yaml": "id: 2\n"}, "add b")
    seen, walked = store.files_added(store.head() or "", None)
    commit_files(repo, {"tasks/b.yaml": None, "tasks/c.yaml": "id: 3\n"}, "swap b for c")

    later, _ = store.files_added(store.head() or "", walked)

    assert {"tasks/a.yaml", "tasks/b.yaml"} <= set(seen)
    assert set(later) == {"tasks/c.yaml"}
