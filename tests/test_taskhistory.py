"""A task's history from real git commits: what each commit did to the task, following its id."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.gitstore import GitStore
from reconciler.taskhistory import MAX_MESSAGE, Change, HistoryEntry, TaskHistory
from tests import configset
from tests.gitrepo import append_commits, commit_files, git, head, init_repo, rename


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "config"
    init_repo(path, {**configset.base_files(), "tasks/5-web.yaml": configset.task(5)})
    return path


def history(repo: Path, task_id: int, history: TaskHistory | None = None) -> list[HistoryEntry]:
    """Every entry of the task's history at the branch head, newest first."""
    found = history or TaskHistory(GitStore(repo))
    entries, total = found.page(head(repo), task_id, 0, 1000)
    assert total == len(entries)
    return entries


def changes(entries: list[HistoryEntry]) -> list[tuple[str, str, tuple[str, ...]]]:
    return [(entry.commit.message.strip(), entry.change.value, entry.fields) for entry in entries]


def test_a_task_created_updated_renamed_and_deleted_lists_each_commit_newest_first(
    repo: Path,
) -> None:
    commit_files(repo, {"tasks/5-web.yaml": configset.task(5, label="web")}, "relabel")
    rename(repo, "tasks/5-web.yaml", "tasks/web/5.yaml", "move")
    commit_files(repo, {"tasks/web/5.yaml": None}, "drop")
    assert changes(history(repo, 5)) == [
        ("drop", "deleted", _every_field()),
        ("move", "renamed", ()),
        ("relabel", "updated", ("label",)),
        ("initial", "created", _every_field()),
    ]


def test_a_task_deleted_and_created_again_keeps_its_whole_history(repo: Path) -> None:
    commit_files(repo, {"tasks/5-web.yaml": None}, "drop")
    commit_files(repo, {"tasks/again.yaml": configset.task(5, label="back")}, "again")
    assert [(message, change) for message, change, _ in changes(history(repo, 5))] == [
        ("again", "created"),
        ("drop", "deleted"),
        ("initial", "created"),
    ]


def test_an_entry_carries_the_commits_author_time_and_whole_message(repo: Path) -> None:
    text = configset.task(5, schedule={"frequency": "daily", "time": "04:00"})
    (repo / "tasks/5-web.yaml").write_text(text)
    git(repo, "add", "-A")
    person = {
        "GIT_AUTHOR_NAME": "Jo Person",
        "GIT_AUTHOR_EMAIL": "jo@example.com",
        "GIT_COMMITTER_DATE": "2026-04-01T10:00:00+02:00",
    }
    git(repo, "commit", "-q", "-m", "Later\n\nThe import runs long.", extra_env=person)
    newest = history(repo, 5)[0]
    assert newest.commit.sha == head(repo)
    assert (newest.commit.author.name, newest.commit.author.email) == (
        "Jo Person",
        "jo@example.com",
    )
    assert newest.commit.time == datetime(2026, 4, 1, 8, 0, tzinfo=UTC)
    assert newest.commit.message == "Later\n\nThe import runs long.\n"
    assert (newest.change.value, newest.fields) == ("updated", ("schedule.time",))


def test_a_huge_commit_message_is_cut_saying_so(repo: Path) -> None:
    text = configset.task(5, label="long")
    commit_files(repo, {"tasks/5-web.yaml": text}, "x" * (MAX_MESSAGE + 10))
    message = history(repo, 5)[0].commit.message
    assert message == "x" * MAX_MESSAGE + f"\n[message cut: {MAX_MESSAGE + 11:,} characters in all]"


def test_a_commit_that_changes_only_comments_is_an_update_of_no_fields(repo: Path) -> None:
    text = "# served by the web team\n" + configset.task(5)
    commit_files(repo, {"tasks/5-web.yaml": text}, "comment")
    assert changes(history(repo, 5))[0] == ("comment", "updated", ())


def test_a_file_moved_and_changed_in_one_commit_is_renamed_with_its_fields(repo: Path) -> None:
    moved = configset.task(5, label="web", storage={"max_backups": 9})
    commit_files(repo, {"tasks/5-web.yaml": None, "tasks/team/web.yaml": moved}, "reorganise")
    assert changes(history(repo, 5))[0] == (
        "reorganise",
        "renamed",
        ("label", "storage.max_backups"),
    )


def test_commits_of_a_second_file_claiming_the_id_are_not_the_tasks(repo: Path) -> None:
    commit_files(repo, {"tasks/copy.yaml": configset.task(5, label="copy")}, "copy")
    commit_files(repo, {"tasks/copy.yaml": configset.task(5, label="copy 2")}, "edit copy")
    commit_files(repo, {"tasks/copy.yaml": None}, "drop copy")
    assert changes(history(repo, 5)) == [("initial", "created", _every_field())]


def test_the_second_file_takes_the_id_over_when_the_first_is_deleted(repo: Path) -> None:
    commit_files(repo, {"tasks/copy.yaml": configset.task(5, label="copy")}, "copy")
    commit_files(repo, {"tasks/5-web.yaml": None}, "drop the first")
    assert changes(history(repo, 5))[0] == ("drop the first", "renamed", ("label",))


def test_a_commit_that_breaks_the_yaml_is_listed_without_fields_and_keeps_the_id(
    repo: Path,
) -> None:
    commit_files(repo, {"tasks/5-web.yaml": "id: 5\nlabel: [unclosed\n"}, "break")
    commit_files(repo, {"tasks/5-web.yaml": "id: 5\nlabel: [still\n"}, "still broken")
    commit_files(repo, {"tasks/5-web.yaml": configset.task(5, label="fixed")}, "fix")
    commit_files(repo, {"tasks/5-web.yaml": configset.task(5, label="final")}, "relabel")
    assert changes(history(repo, 5))[:4] == [
        ("relabel", "updated", ("label",)),
        ("fix", "updated", ()),
        ("still broken", "updated", ()),
        ("break", "updated", ()),
    ]


def test_a_file_that_stops_declaring_an_id_keeps_the_one_it_had(repo: Path) -> None:
    commit_files(repo, {"tasks/5-web.yaml": configset.task(5).replace("id: 5\n", "")}, "oops")
    assert changes(history(repo, 5))[0] == ("oops", "updated", ("id",))


def test_a_file_that_declares_another_id_ends_one_task_and_starts_another(repo: Path) -> None:
    commit_files(repo, {"tasks/5-web.yaml": configset.task(6)}, "renumber")
    assert changes(history(repo, 5))[0][:2] == ("renumber", "deleted")
    assert changes(history(repo, 6)) == [("renumber", "created", _every_field())]


def test_files_outside_tasks_are_never_part_of_a_tasks_history(repo: Path) -> None:
    commit_files(repo, {"servers/one.yaml": configset.server(1, 1, label="x")}, "server")
    commit_files(repo, {"notes/5.yaml": configset.task(5, label="notes")}, "notes")
    assert [message for message, _, _ in changes(history(repo, 5))] == ["initial"]


def test_a_branch_merged_lists_its_commits_and_not_a_merge_that_changed_nothing(
    repo: Path,
) -> None:
    git(repo, "checkout", "-q", "-b", "feature")
    commit_files(repo, {"tasks/5-web.yaml": configset.task(5, label="feature")}, "on a branch")
    git(repo, "checkout", "-q", "main")
    commit_files(repo, {"servers/two.yaml": configset.server(2, 2, label="y")}, "elsewhere")
    git(repo, "merge", "-q", "--no-ff", "-m", "merge feature", "feature")
    assert [message for message, _, _ in changes(history(repo, 5))] == ["on a branch", "initial"]


def test_new_commits_are_added_to_what_was_already_read(repo: Path) -> None:
    followed = TaskHistory(GitStore(repo))
    history(repo, 5, followed)
    for number in range(3):
        commit_files(repo, {"tasks/5-web.yaml": configset.task(5, label=f"l{number}")}, "edit")
        assert changes(history(repo, 5, followed)) == changes(history(repo, 5))
    assert len(history(repo, 5, followed)) == 4


def test_a_rewritten_history_is_read_again(repo: Path) -> None:
    followed = TaskHistory(GitStore(repo))
    commit_files(repo, {"tasks/5-web.yaml": configset.task(5, label="gone")}, "to be dropped")
    assert len(history(repo, 5, followed)) == 2
    git(repo, "reset", "-q", "--hard", "HEAD~1")
    commit_files(repo, {"tasks/5-web.yaml": configset.task(5, label="kept")}, "kept")
    assert [message for message, _, _ in changes(history(repo, 5, followed))] == [
        "kept",
        "initial",
    ]


def test_an_older_head_than_the_one_read_is_answered_at_that_head_from_what_was_read(
    repo: Path,
) -> None:
    followed = TaskHistory(GitStore(repo))
    older = head(repo)
    newer = commit_files(repo, {"tasks/5-web.yaml": configset.task(5, label="newer")}, "newer")
    history(repo, 5, followed)
    entries, total = followed.page(older, 5, 0, 10)
    assert (total, entries[0].commit.message) == (1, "initial\n")
    assert followed.revision == newer


def test_a_branch_reset_to_an_older_commit_no_longer_lists_the_commits_it_dropped(
    repo: Path,
) -> None:
    followed = TaskHistory(GitStore(repo))
    commit_files(repo, {"tasks/5-web.yaml": configset.task(5, label="gone")}, "to be dropped")
    assert len(history(repo, 5, followed)) == 2
    git(repo, "reset", "-q", "--hard", "HEAD~1")
    assert changes(history(repo, 5, followed)) == changes(history(repo, 5))


def test_pages_cut_the_history_newest_first(repo: Path) -> None:
    edits = [{"tasks/5-web.yaml": configset.task(5, label=f"edit {n}")} for n in range(12)]
    append_commits(repo, edits, start=1_800_000_000)
    followed = TaskHistory(GitStore(repo))
    pages = [followed.page(head(repo), 5, offset, 5) for offset in (0, 5, 10, 15)]
    assert [total for _, total in pages] == [13] * 4
    messages = [[entry.commit.message.strip() for entry in entries] for entries, _ in pages]
    assert messages == [
        [f"edit {n}" for n in range(11, 6, -1)],
        [f"edit {n}" for n in range(6, 1, -1)],
        ["edit 1", "edit 0", "initial"],
        [],
    ]


def test_an_unknown_task_has_no_history(repo: Path) -> None:
    assert TaskHistory(GitStore(repo)).page(head(repo), 99, 0, 15) == ([], 0)


PATHS = ["tasks/a.yaml", "tasks/b.yaml", "tasks/c/d.yaml"]
IDS = st.sampled_from([1, 2])
CONTENTS = st.one_of(
    st.builds(lambda i, label: configset.task(i, label=label), IDS, st.sampled_from(["x", "y"])),
    st.builds(lambda i: "# a comment\n" + configset.task(i), IDS),
    st.just("id: [broken\n"),
    st.none(),
)
STEPS = st.lists(
    st.dictionaries(st.sampled_from(PATHS), CONTENTS, min_size=1, max_size=2),
    min_size=1,
    max_size=12,
)


@settings(max_examples=20, deadline=None)
@given(STEPS)
def test_any_history_read_commit_by_commit_is_the_same_read_at_once_and_alternates_lives(
    steps: list[dict[str, str | None]],
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "config"
        init_repo(repo, {"users.yaml": configset.USERS})
        append_commits(repo, steps, start=1_800_000_000)
        commits = git(repo, "rev-list", "--reverse", "HEAD").split()
        followed = TaskHistory(GitStore(repo))
        for commit in commits:
            followed.page(commit, 1, 0, 0)
        declared = {_declared(repo / path) for path in PATHS if (repo / path).exists()}
        for task_id in (1, 2):
            at_once = TaskHistory(GitStore(repo)).page(commits[-1], task_id, 0, 1000)
            assert followed.page(commits[-1], task_id, 0, 1000) == at_once
            alive = False
            for entry in reversed(at_once[0]):
                assert (entry.change is Change.CREATED) == (not alive), entry
                alive = entry.change is not Change.DELETED
            if task_id in declared:
                assert alive
            if alive:
                assert declared  # some task file is left to hold it


def _declared(path: Path) -> int | None:
    """The id a task file declares, if it reads."""
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError:
        return None
    return data.get("id") if isinstance(data, dict) else None


def _every_field() -> tuple[str, ...]:
    return (
        "backup_destination_id",
        "id",
        "label",
        "remote_server_id",
        "schedule.frequency",
        "schedule.time",
        "source.path",
        "source.type",
        "user_id",
    )
