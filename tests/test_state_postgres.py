"""The PostgreSQL state store beyond the shared interface tests: migrations under a lock, an
older node refused by a newer schema, connection errors without the password, and API secrets
kept as age armors only."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.agecrypt import load_identities
from reconciler.secrets import SecretError, Secrets
from reconciler.state import StateStore, open_state
from reconciler.state.errors import StateError
from reconciler.state.postgres.connection import SCHEMA_VERSION
from tests.agekeys import age_decrypt, age_keygen
from tests.daemonproc import reconciler
from tests.servers import PostgresServer, free_port
from tests.stores import fresh_postgres_database

pytestmark = pytest.mark.servers


@pytest.fixture
def url(postgres: PostgresServer) -> Iterator[str]:
    with fresh_postgres_database(postgres) as made:
        yield made


def test_nodes_starting_at_once_on_a_new_database_migrate_it_once(
    url: str, postgres: PostgresServer
) -> None:
    opened: list[StateStore] = []
    errors: list[BaseException] = []

    def start() -> None:
        try:
            opened.append(open_state(url))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert errors == []
        assert sorted(store.created for store in opened) == [False, False, False, True]
        database = url.rsplit("/", 1)[1]
        assert postgres.sql("SELECT version FROM schema_version", database).strip() == str(
            SCHEMA_VERSION
        )
    finally:
        for store in opened:
            store.close()


def test_a_node_older_than_the_schema_refuses_to_start(url: str, postgres: PostgresServer) -> None:
    open_state(url).close()
    database = url.rsplit("/", 1)[1]
    newer = SCHEMA_VERSION + 1
    postgres.sql(f"UPDATE schema_version SET version = {newer}", database)  # noqa: S608

    with pytest.raises(StateError, match="newer than this version of reconciler knows"):
        open_state(url)


def test_an_unreachable_server_is_named_without_the_password() -> None:
    url = f"postgresql://backup:s3cret-pw@127.0.0.1:{free_port()}/state"

    with pytest.raises(StateError) as raised:
        open_state(url)

    port = url.rsplit(":", 1)[1].split("/")[0]
    assert f"postgresql://backup@127.0.0.1:{port}/state" in str(raised.value)
    assert "s3cret-pw" not in str(raised.value)


def test_the_cli_takes_a_postgresql_url_for_state(url: str) -> None:
    created = reconciler("token", "create", "--state", url, "--user-id", "1", "--name", "ci")
    listed = reconciler("token", "list", "--state", url)

    assert created.returncode == 0, created.stderr
    assert created.stdout.startswith("rk_")
    assert "ci" in listed.stdout


def test_api_secrets_are_stored_as_age_armors_that_the_identity_reads(
    url: str, postgres: PostgresServer, tmp_path: Path
) -> None:
    key = age_keygen(tmp_path / "identity.txt")
    identities = load_identities(key.identity)
    store = open_state(url)
    try:
        assert store.api_secrets is not None
        secrets = Secrets(store.api_secrets, {}, identities)
        ref = secrets.put("db-password", "hunter2-correct-horse")
        database = url.rsplit("/", 1)[1]
        stored = postgres.sql("SELECT armor FROM api_secrets", database)

        assert "hunter2" not in stored
        assert age_decrypt(stored, key) == b"hunter2-correct-horse"  # the real age CLI reads it
        assert secrets.resolve(ref) == "hunter2-correct-horse"
        assert secrets.keys() == {"db-password"}
    finally:
        store.close()


def test_api_secrets_in_postgresql_need_the_age_identity(url: str) -> None:
    store = open_state(url)
    try:
        assert store.api_secrets is not None
        secrets = Secrets(store.api_secrets, {})

        with pytest.raises(SecretError, match="start it with --age-identity"):
            secrets.put("db-password", "hunter2")
    finally:
        store.close()
