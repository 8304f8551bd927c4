"""Small value types shared by every layer: no logic, no I/O."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol


@dataclass(frozen=True, slots=True)
class ConfigError:
    """One problem in the config set, located as precisely as the YAML allows."""

    path: str
    line: int | None
    field: str
    message: str

    def render(self) -> str:
        """`path:line: field: reason`, the form editors and CI annotations understand."""
        where = f"{self.path}:{self.line}" if self.line is not None else self.path
        return f"{where}: {self.field or '(file)'}: {self.message}"


# The largest request body the API reads: a daemon setting's default, and the API's own.
DEFAULT_MAX_BODY_BYTES = 1024 * 1024
# How often the API's token uses are written (see `reconciler.api.tokenuse`): the same.
TOKEN_USE_FLUSH_SECONDS = 10.0


class TaskStatus(StrEnum):
    READY = "ready"
    QUEUED = "queued"  # its run waits for a worker or for a slot of its server
    RUNNING = "running"


class RunStatus(StrEnum):
    QUEUED = "queued"  # admitted, not started yet
    RUNNING = "running"
    SUCCESSFUL = "successful"
    FAILED = "failed"


class RunKind(StrEnum):
    """What a run does: take a backup, or prove the newest one restorable (a restore drill)."""

    BACKUP = "backup"
    VERIFY = "verify"


class Clock(Protocol):
    """Where time comes from; logic takes `now` as a parameter, the runtime asks a Clock."""

    def now(self) -> datetime: ...


class ReconcilerError(Exception):
    """A problem a user can fix (a path, a repository, a task id, a secret): its message is one
    sentence that says what and why, shown as is, never as a traceback."""


class SecretRows(Protocol):
    """API-sent secrets kept in a shared state store, each as its age armor (never plaintext):
    what `reconciler.secrets` reads and writes when the store is PostgreSQL."""

    def armor(self, key: str) -> str | None: ...

    def keys(self) -> set[str]: ...

    def put(self, key: str, armor: str) -> None: ...

    def forget(self, keys: Iterable[str]) -> None: ...

    def describe(self) -> str:
        """Where the rows are, for messages (never a password)."""
        ...
