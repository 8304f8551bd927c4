"""restic's exit codes and messages, and the secrets it is given, as pure functions."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from reconciler.desired import DesiredState, build_desired
from reconciler.documents import parse_file
from reconciler.models import ResticDestination, SecretRef
from reconciler.resticcommands import ResticProblem, backup_argv, classify, restic_environment
from tests import configset


def test_the_codes_of_later_restic_releases_are_mapped() -> None:
    assert classify(3, "") is ResticProblem.INCOMPLETE
    assert classify(10, "") is ResticProblem.NO_REPOSITORY
    assert classify(11, "") is ResticProblem.LOCKED
    assert classify(12, "") is ResticProblem.WRONG_PASSWORD


def test_restic_0_14_is_read_by_its_messages_when_it_exits_with_1() -> None:
    assert classify(1, "Fatal: wrong password or no key found") is ResticProblem.WRONG_PASSWORD
    locked = "unable to create lock in backend: repository is already locked by PID 1 on vm"
    assert classify(1, locked) is ResticProblem.LOCKED
    missing = "Fatal: unable to open config file: stat r/config: no such file or directory"
    assert classify(1, missing) is ResticProblem.NO_REPOSITORY


def test_an_unknown_exit_is_a_failure_and_zero_is_success() -> None:
    assert classify(1, "something else") is ResticProblem.FAILED
    assert classify(42, "") is ResticProblem.FAILED
    assert classify(0, "") is None


def test_secrets_go_in_the_environment_never_the_argv() -> None:
    destination = ResticDestination(
        id=1, user_id=1, label="v", type="restic", repository="s3:s3.example.com/bucket",
        password=SecretRef(env="PW"), access_key_id=SecretRef(env="AK"),
        secret_access_key=SecretRef(env="SK"),
    )  # fmt: skip
    values = {"PW": "p4ss", "AK": "akid", "SK": "sk3y"}
    env = restic_environment(destination, lambda ref: values[str(ref.env)], {"RESTIC_X": "old"})
    assert env == {
        "RESTIC_REPOSITORY": "s3:s3.example.com/bucket",
        "RESTIC_PASSWORD": "p4ss",
        "AWS_ACCESS_KEY_ID": "akid",
        "AWS_SECRET_ACCESS_KEY": "sk3y",
    }
    argv = backup_argv("", "backup_1_20240501030000.tar", ["task:1"])
    assert not any(secret in " ".join(argv) for secret in values.values())


def restic_files(**task_fields: Any) -> dict[str, str]:
    restic = configset.destination(
        1, 1, type="restic", repository="/var/tmp/vault", password={"env": "PW"}
    )
    restic = restic.replace("path: /var/tmp/backups-1\n", "")
    return {
        **configset.base_files(),
        "destinations/one.yaml": restic,
        "tasks/a.yaml": configset.task(1, **task_fields),
    }


def line_of(text: str, start: str) -> int:
    return next(n for n, line in enumerate(text.splitlines(), 1) if line.startswith(start))


def build(files: dict[str, str]) -> DesiredState:
    parsed = {path: parse_file(path, text.encode()) for path, text in files.items()}
    return build_desired(parsed, DesiredState())


def test_a_task_on_a_restic_destination_resolves() -> None:
    state = build(restic_files())
    assert state.errors == ()
    assert isinstance(state.tasks[1].destination, ResticDestination)


def test_encryption_password_on_a_restic_task_is_a_config_error_with_its_line() -> None:
    files = restic_files(encryption_password={"env": "E"})
    (error,) = build(files).errors
    assert error.path == "tasks/a.yaml"
    assert error.field == "encryption_password"
    assert error.line == line_of(files["tasks/a.yaml"], "encryption_password:")
    assert "restic destination encrypts" in error.message


def test_compression_on_a_restic_task_is_a_config_error_with_its_line() -> None:
    files = restic_files(storage={"compression": "zstd"})
    (error,) = build(files).errors
    assert error.field == "storage.compression"
    assert error.line == line_of(files["tasks/a.yaml"], "  compression:")
    assert "compresses by itself" in error.message


def test_a_multi_line_repository_is_refused() -> None:
    with pytest.raises(ValidationError, match="single line"):
        ResticDestination(
            id=1, user_id=1, label="v", type="restic", repository="/a\n/b",
            password=SecretRef(env="PW"),
        )  # fmt: skip
