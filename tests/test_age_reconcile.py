"""age-encrypted secrets in a running daemon: decrypted when the reconcile reads a file, so one
that does not decrypt is a config error with its file and line while the last good version keeps
running; and the plaintext never reaches the API, the log or the disk.

The daemon is the real one (`daemon.running` over a real git repository, `--age-identity` a key
made by age-keygen); references are made by the `age` CLI, as on a laptop.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from reconciler.types import ConfigError
from tests import configset
from tests.agekeys import AgeKey, age_encrypt, age_keygen, indented
from tests.apirig import ApiRig, api_rig, config_files
from tests.gitrepo import commit_files, git

pytestmark = pytest.mark.anyio

SECRET = "gpg passphrase 9f2c, never shown"
TASK = "tasks/1-first.yaml"


def task_with_age_password(armor: str, label: str = "task 1", task_id: int = 1) -> str:
    """A task of user 1 with its encryption password as a pasted `age:` block."""
    text = configset.task(task_id, 1, label=label)
    return text + "encryption_password:\n  age: |\n" + indented(armor, 4)


def age_line(text: str) -> int:
    return next(n for n, line in enumerate(text.splitlines(), 1) if line.strip() == "age: |")


@pytest.fixture
def daemon_key(tmp_path: Path) -> AgeKey:
    return age_keygen(tmp_path / "daemon.key")


@pytest.fixture
def other_key(tmp_path: Path) -> AgeKey:
    return age_keygen(tmp_path / "laptop.key")


@pytest.fixture
async def rig(tmp_path: Path, daemon_key: AgeKey) -> AsyncIterator[ApiRig]:
    armor = age_encrypt(SECRET.encode(), daemon_key.recipient)
    files = {**config_files(), TASK: task_with_age_password(armor)}
    async with api_rig(tmp_path, files, age_identity=daemon_key.identity) as made:
        yield made


async def test_a_reference_made_by_the_age_cli_is_applied_and_resolves(rig: ApiRig) -> None:
    assert rig.engine.errors == ()
    password = rig.engine.desired.tasks[1].task.encryption_password

    assert password is not None
    assert rig.secrets.resolve(password) == SECRET


async def test_a_reference_for_another_identity_is_a_config_error_with_its_file_and_line(
    rig: ApiRig, other_key: AgeKey
) -> None:
    text = task_with_age_password(age_encrypt(SECRET.encode(), other_key.recipient), "renamed")

    commit_files(rig.repo, {TASK: text}, "a password for the wrong key")
    await rig.engine.sync()

    (error,) = rig.engine.errors
    assert (error.path, error.line, error.field) == (
        TASK,
        age_line(text),
        "encryption_password.age",
    )
    assert "encrypted to other recipients" in error.message


async def test_the_last_good_version_keeps_running_while_a_reference_does_not_decrypt(
    rig: ApiRig, other_key: AgeKey
) -> None:
    good = rig.engine.desired.tasks[1]
    text = task_with_age_password(age_encrypt(SECRET.encode(), other_key.recipient), "renamed")

    commit_files(rig.repo, {TASK: text}, "a password for the wrong key")
    await rig.engine.sync()

    assert rig.engine.desired.tasks[1] == good
    assert rig.engine.desired.tasks[1].task.label == "task 1"


async def test_a_fixed_reference_is_applied_at_the_next_commit(
    rig: ApiRig, daemon_key: AgeKey, other_key: AgeKey
) -> None:
    wrong = task_with_age_password(age_encrypt(b"x", other_key.recipient), "renamed")
    commit_files(rig.repo, {TASK: wrong}, "a password for the wrong key")
    await rig.engine.sync()

    fixed = task_with_age_password(age_encrypt(b"new", daemon_key.recipient), "renamed")
    commit_files(rig.repo, {TASK: fixed}, "encrypted to the daemon this time")
    await rig.engine.sync()

    assert rig.engine.errors == ()
    assert rig.engine.desired.tasks[1].task.label == "renamed"


async def test_a_garbage_reference_is_a_config_error_and_the_last_good_version_runs(
    rig: ApiRig,
) -> None:
    good = rig.engine.desired.tasks[1]
    text = configset.task(1, 1, label="renamed", encryption_password={"age": "hunter2"})

    commit_files(rig.repo, {TASK: text}, "a password in the clear")
    await rig.engine.sync()

    (error,) = rig.engine.errors
    assert (error.path, error.field) == (TASK, "encryption_password.age")
    assert error.line == next(
        n for n, line in enumerate(text.splitlines(), 1) if line.startswith("  age:")
    )
    assert "-----BEGIN AGE ENCRYPTED FILE-----" in error.message
    assert "hunter2" not in error.message
    assert rig.engine.desired.tasks[1] == good


async def test_without_an_age_identity_a_reference_is_a_config_error_naming_the_flag(
    tmp_path: Path, daemon_key: AgeKey
) -> None:
    text = task_with_age_password(age_encrypt(SECRET.encode(), daemon_key.recipient))
    files = {**config_files(), TASK: text}

    async with api_rig(tmp_path, files) as rig:
        assert rig.engine.errors == (
            ConfigError(
                TASK,
                age_line(text),
                "encryption_password.age",
                "the age-encrypted secret cannot be decrypted: the daemon was given no age"
                " identity (reconciler serve --age-identity FILE, or RECONCILER_AGE_IDENTITY)",
            ),
        )
        assert 1 not in rig.engine.desired.tasks


async def test_a_reference_in_a_server_file_is_vetted_too(rig: ApiRig, other_key: AgeKey) -> None:
    armor = age_encrypt(b"db password", other_key.recipient)
    server = configset.server(1, 1, port=1, database={"password": {"age": armor}})

    commit_files(rig.repo, {"servers/one.yaml": server}, "a database password")
    await rig.engine.sync()

    (error,) = rig.engine.errors
    assert (error.path, error.field) == ("servers/one.yaml", "database.password.age")
    assert rig.engine.desired.servers[1].database is None  # the last good version


async def test_the_api_never_shows_the_plaintext(rig: ApiRig, other_key: AgeKey) -> None:
    wrong = task_with_age_password(age_encrypt(SECRET.encode(), other_key.recipient), task_id=3)
    commit_files(rig.repo, {"tasks/3-other.yaml": wrong}, "a task for a key the daemon lacks")
    await rig.engine.sync()
    responses = [
        await rig.get("/api/backup-tasks"),
        await rig.get("/api/backup-tasks/1"),
        await rig.get("/api/backup-tasks/upcoming"),
        await rig.get("/api/sync"),
        await rig.put("/api/backup-tasks/1", {"label": "relabelled"}),
        await rig.get("/api/backup-tasks/1"),
    ]

    assert [response.status_code for response in responses] == [200] * len(responses)
    assert all(SECRET not in response.text for response in responses)
    assert responses[1].json()["data"]["has_encryption_password"] is True
    errors = responses[3].json()["data"]["errors"]
    assert [(error["path"], error["field"]) for error in errors] == [
        ("tasks/3-other.yaml", "encryption_password.age")
    ]


async def test_an_api_edit_keeps_the_encrypted_reference_as_written(rig: ApiRig) -> None:
    before = rig.file(TASK)

    response = await rig.put("/api/backup-tasks/1", {"label": "relabelled"})

    assert response.status_code == 200, response.text
    after = rig.file(TASK)
    assert after == before.replace("label: task 1", "label: relabelled")
    assert rig.engine.errors == ()
    password = rig.engine.desired.tasks[1].task.encryption_password
    assert password is not None
    assert rig.secrets.resolve(password) == SECRET


async def test_the_plaintext_is_never_logged(
    tmp_path: Path, daemon_key: AgeKey, other_key: AgeKey, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    good = task_with_age_password(age_encrypt(SECRET.encode(), daemon_key.recipient))
    files = {**config_files(), TASK: good}
    async with api_rig(tmp_path, files, age_identity=daemon_key.identity) as rig:
        wrong = task_with_age_password(age_encrypt(SECRET.encode(), other_key.recipient), "x")
        commit_files(rig.repo, {TASK: wrong}, "wrong key")
        await rig.engine.sync()
        assert rig.engine.errors  # the error was logged, as config errors are

    assert caplog.records
    assert all(SECRET not in record.getMessage() for record in caplog.records)


async def test_the_plaintext_is_never_written_to_disk(rig: ApiRig) -> None:
    password = rig.engine.desired.tasks[1].task.encryption_password
    assert password is not None
    rig.secrets.resolve(password)
    await rig.put("/api/backup-tasks/1", {"label": "relabelled"})

    # The state store, its WAL, the secrets store, the work tree; and every commit's content.
    written = [
        path
        for path in rig.repo.parent.rglob("*")
        if path.is_file() and SECRET.encode() in path.read_bytes()
    ]
    assert written == []
    assert SECRET not in git(rig.repo, "log", "--all", "-p")


async def test_an_api_edit_of_a_file_whose_reference_does_not_decrypt_is_refused(
    rig: ApiRig, other_key: AgeKey
) -> None:
    wrong = task_with_age_password(age_encrypt(SECRET.encode(), other_key.recipient))
    commit_files(rig.repo, {TASK: wrong}, "a password for the wrong key")
    await rig.engine.sync()
    commits = rig.commits()

    response = await rig.put("/api/backup-tasks/1", {"label": "relabelled"})

    assert response.status_code == 422, response.text
    (message,) = response.json()["errors"]["encryption_password"]
    assert "encrypted to other recipients" in message
    assert rig.commits() == commits
    assert rig.file(TASK) == wrong


async def test_a_new_password_through_the_api_replaces_a_reference_that_does_not_decrypt(
    rig: ApiRig, other_key: AgeKey
) -> None:
    wrong = task_with_age_password(age_encrypt(SECRET.encode(), other_key.recipient))
    commit_files(rig.repo, {TASK: wrong}, "a password for the wrong key")
    await rig.engine.sync()

    response = await rig.put("/api/backup-tasks/1", {"encryption_password": "from the API"})

    assert response.status_code == 200, response.text
    assert "BEGIN AGE" not in rig.file(TASK)
    assert rig.engine.errors == ()
    password = rig.engine.desired.tasks[1].task.encryption_password
    assert password is not None
    assert rig.secrets.resolve(password) == "from the API"
