"""From one file's path and bytes to the objects it declares, or to located errors.

The layout of a config set decides what a file holds: `users.yaml` lists the users, and each file
under `tasks/`, `servers/`, `destinations/` and `notifications/` declares one object of that kind.
Parsing is split in two steps so the slow one (YAML) can run in worker processes: `read_yaml`
turns bytes into plain data, `to_documents` validates that data with the models.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from reconciler import yamlsyntax
from reconciler.models import (
    BackupDestination,
    BackupTask,
    Document,
    NotificationStream,
    RemoteServer,
    User,
)
from reconciler.types import ConfigError


class Kind(StrEnum):
    USER = "user"
    SERVER = "server"
    DESTINATION = "destination"
    NOTIFICATION = "notification"
    TASK = "task"


_FOLDERS = {
    "tasks": Kind.TASK,
    "servers": Kind.SERVER,
    "destinations": Kind.DESTINATION,
    "notifications": Kind.NOTIFICATION,
}
_USERS_FILES = ("users.yaml", "users.yml")
_LAYOUT_HELP = (
    "not part of the config set layout: expected users.yaml or a file under "
    "tasks/, servers/, destinations/ or notifications/"
)

_DESTINATION: TypeAdapter[Any] = TypeAdapter(BackupDestination)
_ADAPTERS: dict[Kind, type[BaseModel] | TypeAdapter[Any]] = {
    Kind.USER: User,
    Kind.SERVER: RemoteServer,
    Kind.DESTINATION: _DESTINATION,
    Kind.NOTIFICATION: NotificationStream,
    Kind.TASK: BackupTask,
}
_DESTINATION_TAGS = frozenset({"local", "sftp", "s3"})


def is_yaml_path(path: str) -> bool:
    return path.endswith((".yaml", ".yml"))


def is_ignored(path: str) -> bool:
    """Hidden files and folders (`.github/`, `.pre-commit-config.yaml`) are not config."""
    return any(part.startswith(".") for part in path.split("/"))


def kind_of(path: str) -> Kind | None:
    """The kind of object a config-set-relative path declares; None outside the layout."""
    if path in _USERS_FILES:
        return Kind.USER
    folder, _, rest = path.partition("/")
    return _FOLDERS.get(folder) if rest else None


@dataclass(frozen=True, slots=True)
class ParsedFile:
    path: str
    kind: Kind | None
    objects: tuple[Document, ...]
    errors: tuple[ConfigError, ...]
    text: bytes
    # The `user_id` a file that failed validation still declares, so its errors reach that user.
    declared_user_id: int | None = None

    @property
    def ok(self) -> bool:
        return not self.errors


@dataclass(frozen=True, slots=True)
class RawYaml:
    """What `read_yaml` produced: plain data, or the syntax error with its line."""

    data: Any = None
    error: yamlsyntax.YamlSyntaxError | None = None


def read_yaml(text: bytes) -> RawYaml:
    try:
        return RawYaml(data=yamlsyntax.load(text))
    except yamlsyntax.YamlSyntaxError as exc:
        return RawYaml(error=exc)


def parse_file(path: str, text: bytes) -> ParsedFile:
    return to_documents(path, text, read_yaml(text))


def to_documents(path: str, text: bytes, raw: RawYaml) -> ParsedFile:
    kind = kind_of(path)

    def failed(*errors: ConfigError) -> ParsedFile:
        return ParsedFile(path, kind, (), errors, text)

    if kind is None:
        return failed(ConfigError(path, None, "", _LAYOUT_HELP))
    if raw.error is not None:
        return failed(ConfigError(path, raw.error.line, "", raw.error.message))
    data = raw.data
    if data is None:
        return failed(ConfigError(path, 1, "", "the file is empty"))
    if kind is Kind.USER:
        return _users(path, text, data)
    if not isinstance(data, dict):
        return failed(
            ConfigError(path, 1, "", f"expected a mapping of fields, got {_yaml_type(data)}")
        )
    try:
        document = _validate(kind, data)
    except ValidationError as exc:
        errors = tuple(validation_errors(path, text, exc, kind))
        return ParsedFile(path, kind, (), errors, text, _declared_user_id(data))
    return ParsedFile(path, kind, (document,), (), text)


def _declared_user_id(data: dict[str, Any]) -> int | None:
    user_id = data.get("user_id")
    is_id = isinstance(user_id, int) and not isinstance(user_id, bool) and user_id > 0
    return user_id if is_id else None


def _users(path: str, text: bytes, data: Any) -> ParsedFile:
    if not isinstance(data, list):
        error = ConfigError(path, 1, "", f"expected a list of users, got {_yaml_type(data)}")
        return ParsedFile(path, Kind.USER, (), (error,), text)
    users: list[User] = []
    errors: list[ConfigError] = []
    seen: dict[int, int] = {}
    for index, item in enumerate(data):
        try:
            user = User.model_validate(item)
        except ValidationError as exc:
            errors.extend(validation_errors(path, text, exc, Kind.USER, prefix=(index,)))
            continue
        if user.id in seen:
            line = yamlsyntax.line_of(text, (index, "id"))
            message = f"user id {user.id} is already used by item {seen[user.id]} of this list"
            errors.append(ConfigError(path, line, f"{index}.id", message))
            continue
        seen[user.id] = index
        users.append(user)
    return ParsedFile(path, Kind.USER, tuple(users), tuple(errors), text)


def _validate(kind: Kind, data: dict[str, Any]) -> Document:
    adapter = _ADAPTERS[kind]
    if isinstance(adapter, TypeAdapter):
        document: Document = adapter.validate_python(data)
        return document
    return adapter.model_validate(data)  # type: ignore[return-value]


def validation_errors(
    path: str,
    text: bytes,
    exc: ValidationError,
    kind: Kind,
    prefix: Sequence[str | int] = (),
) -> list[ConfigError]:
    """One ConfigError per pydantic error, with the YAML line of the offending key."""
    errors = []
    for error in exc.errors(include_url=False):
        location = list(error["loc"])
        # A discriminated union puts the chosen tag in the location: it is not a YAML key.
        if kind is Kind.DESTINATION and location and location[0] in _DESTINATION_TAGS:
            location = location[1:]
        full = [*prefix, *location]
        field = ".".join(str(part) for part in full)
        line = yamlsyntax.line_of(text, full)
        errors.append(ConfigError(path, line, field, _message(error)))
    return errors


def _message(error: Any) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown field (check its spelling and indentation)"
    if kind == "missing":
        return "required field is missing"
    message: str = error["msg"]
    return message.removeprefix("Value error, ").removeprefix("Assertion failed, ")


def _yaml_type(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"the scalar {value!r}"
