"""Whose is a config error (pure), and operator tokens in the state store and the CLI."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from reconciler.desired import DesiredState, build_desired, errors_for_user, file_users
from reconciler.documents import ParsedFile, parse_file
from reconciler.state.sqlite import SqliteStateStore
from reconciler.state.sqlite.connection import _MIGRATIONS
from tests import configset
from tests.test_cli import reconciler

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


def parsed(path: str, text: str) -> ParsedFile:
    return parse_file(path, text.encode())


def test_a_valid_file_belongs_to_its_objects_user() -> None:
    assert file_users(parsed("servers/a.yaml", configset.server(1, 2)), None) == {2}


def test_a_file_failing_validation_belongs_to_the_user_id_it_declares() -> None:
    broken = parsed("tasks/a.yaml", configset.task(1, 2, label=["not", "text"]))
    assert not broken.ok
    assert file_users(broken, None) == {2}


def test_a_file_that_does_not_parse_belongs_to_its_last_good_versions_user() -> None:
    good = parsed("tasks/a.yaml", configset.task(1, 2))
    assert file_users(parsed("tasks/a.yaml", "id: 1\nuser_id: [\n"), good) == {2}


def test_a_file_moved_to_another_user_belongs_to_both_while_broken() -> None:
    good = parsed("tasks/a.yaml", configset.task(1, 1))
    broken = parsed("tasks/a.yaml", configset.task(1, 2, label=["x"]))
    assert file_users(broken, good) == {1, 2}


def test_a_file_that_does_not_parse_and_was_never_good_belongs_to_no_user() -> None:
    assert file_users(parsed("tasks/a.yaml", "id: [\n"), None) == frozenset()


def test_users_yaml_belongs_to_no_user() -> None:
    users = parsed("users.yaml", configset.USERS + "- id: 3\n  name: x\n  email: bad\n")
    assert file_users(users, parsed("users.yaml", configset.USERS)) == frozenset()


def test_a_file_outside_the_layout_belongs_to_no_user() -> None:
    assert file_users(parsed("stray.yaml", configset.task(1, 1)), None) == frozenset()


@given(
    user_id=st.one_of(
        st.integers(-5, 10), st.booleans(), st.text(max_size=3), st.none(), st.lists(st.integers())
    )
)
def test_only_a_positive_integer_user_id_makes_a_broken_file_someones(user_id: object) -> None:
    text = configset.dump({"id": 1, "user_id": user_id, "label": ["broken"]})
    expected = (
        {user_id} if isinstance(user_id, int) and not isinstance(user_id, bool) and user_id > 0
        else set()
    )  # fmt: skip
    assert file_users(parsed("tasks/a.yaml", text), None) == expected


def test_a_user_is_shown_the_errors_of_its_files_only() -> None:
    files = {
        **configset.base_files(),
        "tasks/1.yaml": configset.task(1, 1, remote_server_id=2),  # someone else's server
        "tasks/2.yaml": "id: 2\n: [\n",
    }
    state = build_desired(
        {path: parsed(path, text) for path, text in files.items()}, DesiredState()
    )

    assert [error.path for error in errors_for_user(state, 1)] == ["tasks/1.yaml"]
    assert errors_for_user(state, 2) == ()
    assert {error.path for error in state.errors} == {"tasks/1.yaml", "tasks/2.yaml"}


# Operator tokens


def test_an_operator_token_says_so_when_it_is_found(tmp_path: Path) -> None:
    history = SqliteStateStore(tmp_path / "state.db")
    try:
        record, plaintext = history.tokens.create_token(1, "ops", ["*"], T0, operator=True)
        _, user_token = history.tokens.create_token(1, "me", ["*"], T0)
        assert record.operator
        operator = history.tokens.find(plaintext)
        user = history.tokens.find(user_token)
        assert operator is not None
        assert operator.operator
        assert user is not None
        assert not user.operator
    finally:
        history.close()


def test_tokens_of_a_store_from_before_operators_are_user_tokens(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    old = sqlite3.connect(path)
    old.executescript(_MIGRATIONS[0] + "PRAGMA user_version = 1;")
    old.execute(
        "INSERT INTO tokens (user_id, name, abilities, hash, created_at)"
        " VALUES (1, 'old', '[\"*\"]', 'h', '2024-03-01T12:00:00.000000Z')"
    )
    old.commit()
    old.close()

    history = SqliteStateStore(path)
    try:
        assert [(token.name, token.operator) for token in history.tokens.list()] == [("old", False)]
    finally:
        history.close()


def test_token_list_shows_which_tokens_are_operators(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    created = reconciler(
        "token", "create", "--state", state, "--user-id", "1", "--name", "ops", "--operator"
    )
    assert created.returncode == 0, created.stderr
    assert "operator token 1 for user 1" in created.stderr
    assert (
        reconciler("token", "create", "--state", state, "--user-id", "2", "--name", "me").returncode
        == 0
    )

    listed = reconciler("token", "list", "--state", state).stdout.splitlines()

    assert [line.split("\t")[:5] for line in listed] == [
        ["1", "user 1", "ops", "*", "operator"],
        ["2", "user 2", "me", "*", "user"],
    ]
