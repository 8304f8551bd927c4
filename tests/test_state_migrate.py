"""`reconciler state migrate --from PATH --to URL`: an SQLite store's history, tokens and API
secrets moved into an empty PostgreSQL store, read back through the store's own interfaces."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from reconciler.agecrypt import load_identities
from reconciler.daemon import secrets_path
from reconciler.models import SecretRef
from reconciler.resticcommands import BackupSummary
from reconciler.secrets import Secrets
from reconciler.state import StateStore, open_state
from reconciler.state.filetimes import IndexedFileTimes
from reconciler.state.idempotency import StoredResponse
from reconciler.state.runs import INTERRUPTED
from reconciler.types import RunKind, RunStatus
from tests.agekeys import AgeKey, age_keygen
from tests.daemonproc import reconciler
from tests.servers import PostgresServer
from tests.stores import fresh_postgres_database
from tests.test_state import T0

pytestmark = pytest.mark.servers

SNAPSHOT = BackupSummary("4982ee51" + "cd" * 28, 5_000_000_000, 12_000_000_000)


@pytest.fixture
def url(postgres: PostgresServer) -> Iterator[str]:
    with fresh_postgres_database(postgres) as made:
        yield made


@pytest.fixture
def key(tmp_path: Path) -> AgeKey:
    return age_keygen(tmp_path / "identity.txt")


def filled_sqlite_store(path: Path) -> str:
    """An SQLite store with a bit of everything; returns a token's plaintext."""
    store = open_state(path)
    try:
        run = store.runs.start_run(3, "schedule", T0)
        store.runs.append_logs(run, [(T0, "first line"), (T0, "second\nline")])
        store.runs.finish_run(
            run, RunStatus.SUCCESSFUL, T0 + timedelta(minutes=1), size=42, snapshot=SNAPSHOT
        )
        drill = store.runs.start_run(3, "schedule", T0 + timedelta(hours=1), RunKind.VERIFY)
        store.runs.finish_run(drill, RunStatus.FAILED, T0 + timedelta(hours=1), reason="bad")
        _, plaintext = store.tokens.create_token(1, "laptop", ["*"], T0, operator=True)
        store.task_id_counter.record_task_id(17)
        times = IndexedFileTimes(T0, T0 + timedelta(days=1), True)
        store.file_times.rebuild_file_times("abc123", {"tasks/3.yaml": times})
        store.idempotency.store_response(
            1, "key-1", StoredResponse("fp", 201, "{}", T0), forget_before=T0
        )
        store.schedule.record_fires([(3, T0)])
        store.schedule.mark_seen([3], T0)
        store.schedule.begin_alive(T0, forget_before=T0)
    finally:
        store.close()
    Secrets(secrets_path(path), {}).put("db-password", "hunter2-horse")
    return plaintext


def migrate(source: Path, url: str, key: AgeKey | None) -> tuple[int, str, str]:
    identity = ["--age-identity", str(key.identity)] if key is not None else []
    done = reconciler("state", "migrate", "--from", source, "--to", url, *identity)
    return done.returncode, done.stdout, done.stderr


def test_everything_moves_and_reads_back_the_same(tmp_path: Path, url: str, key: AgeKey) -> None:
    source = tmp_path / "state.db"
    plaintext = filled_sqlite_store(source)
    before = open_state(source)
    expected = before.runs.page(3, 0, 10)
    before.close()

    status, out, err = migrate(source, url, key)

    assert status == 0, err
    assert "2 runs, 1 run_logs, 1 tokens" in out
    assert "1 secrets" in out
    moved: StateStore = open_state(url)
    try:
        assert moved.runs.page(3, 0, 10) == expected
        token = moved.tokens.find(plaintext)
        assert token is not None
        assert (token.name, token.operator) == ("laptop", True)
        assert moved.task_id_counter.highest_task_id() == 17
        assert moved.file_times.file_times_revision() == "abc123"
        assert moved.idempotency.stored_response(1, "key-1", T0) is not None
        assert moved.schedule.last_fired() == {3: T0}
        assert moved.runs.start_run(4, "manual", T0) == 3, "new ids follow the moved ones"
        assert moved.api_secrets is not None
        secrets = Secrets(moved.api_secrets, {}, load_identities(key.identity))
        assert secrets.resolve(SecretRef(secret="db-password")) == "hunter2-horse"
    finally:
        moved.close()


def test_a_runs_restic_summary_moves_with_it(tmp_path: Path, url: str, key: AgeKey) -> None:
    source = tmp_path / "state.db"
    filled_sqlite_store(source)

    assert migrate(source, url, key)[0] == 0

    moved = open_state(url)
    try:
        backup, drill = moved.runs.page(3, 0, 10)[0][::-1]
        assert (backup.snapshot, drill.snapshot) == (SNAPSHOT, None)
    finally:
        moved.close()


def test_a_store_in_use_is_never_merged_into(tmp_path: Path, url: str, key: AgeKey) -> None:
    source = tmp_path / "state.db"
    filled_sqlite_store(source)
    assert migrate(source, url, key)[0] == 0

    status, _, err = migrate(source, url, key)

    assert status != 0
    assert "is in use (its runs table has rows)" in err
    password = url.split(":")[2].split("@")[0]
    assert password not in err


def test_api_secrets_without_an_age_identity_move_nothing(tmp_path: Path, url: str) -> None:
    source = tmp_path / "state.db"
    filled_sqlite_store(source)

    status, _, err = migrate(source, url, None)

    assert status != 0
    assert "give --age-identity" in err
    store = open_state(url)
    try:
        assert store.runs.latest_run(3) is None
    finally:
        store.close()


def test_a_run_left_unfinished_moves_as_interrupted(tmp_path: Path, url: str, key: AgeKey) -> None:
    source = tmp_path / "state.db"
    filled_sqlite_store(source)
    store = open_state(source)
    store.runs.start_run(5, "schedule", T0)
    store.close()

    assert migrate(source, url, key)[0] == 0

    moved = open_state(url)
    try:
        run = moved.runs.latest_run(5)
        assert run is not None
        assert (run.status, run.reason) == (RunStatus.FAILED, INTERRUPTED)
    finally:
        moved.close()
