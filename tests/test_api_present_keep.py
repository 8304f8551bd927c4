"""The task resource of a task kept by `storage.keep`: its `keep.last` is the API's max_backups."""

from __future__ import annotations

from datetime import UTC, datetime

from reconciler.api import present
from reconciler.documents import parse_file
from reconciler.models import BackupTask, User
from reconciler.types import TaskStatus
from tests import configset

ADA = User(id=1, name="Ada", email="ada@example.com")


def presented_max_backups(storage: dict[str, object]) -> int:
    (task,) = parse_file("tasks/3.yaml", configset.task(3, storage=storage).encode()).objects
    assert isinstance(task, BackupTask)
    resource = present.task(
        task,
        ADA,
        status=TaskStatus.READY,
        last_run=None,
        file_times=None,
        now=datetime(2026, 11, 30, tzinfo=UTC),
    )
    return resource.storage.max_backups


def test_keep_last_is_shown_as_max_backups() -> None:
    assert presented_max_backups({"keep": {"last": 3, "daily": 7}}) == 3


def test_max_backups_is_shown_beside_other_keep_rules() -> None:
    assert presented_max_backups({"max_backups": 2, "keep": {"daily": 7}}) == 2
