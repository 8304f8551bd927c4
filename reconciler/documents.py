"""From one file's path and bytes to the objects it declares, or to located errors.

The layout of a config set decides what a file holds: `users.yaml` lists the users, and each file
under `tasks/`, `servers/`, `destinations/` and `notifications/` declares one object of that kind.
Parsing is split in two steps so the slow one (YAML) can run in worker processes: `read_yaml`
turns bytes into plain data, `to_documents` validates that data with the models.

Before any of that, `file_problem` refuses a file whose name breaks the path rule or whose size
is over MAX_FILE_BYTES: it is reported, never parsed and never applied. The readers check the
size before they read, so an oversized file is never held in memory.
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
    path_problem,
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

MAX_FILE_BYTES = 1024 * 1024
"""A config file larger than this (1 MiB) is reported and not read: no task file comes close."""
MAX_ERRORS_PER_FILE = 100
"""Problems reported per file; past this, one more error says how many were left out."""
_MAX_MESSAGE = 300
SYMLINK_REASON = (
    "a symbolic link: links are never followed, in the work tree or in a commit, so nothing it"
    " points to is applied; commit the file itself"
)


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
    # Why the file was refused unread (a bad name or size, a link); its `text` is then empty.
    unread: str | None = None

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
    """The one entry point from a file to its objects or its errors (the daemon, validate, plan
    and the API all parse through it)."""
    problem = file_problem(path, len(text))
    if problem is not None:
        return refused(path, problem)
    return to_documents(path, text, read_yaml(text))


def file_problem(path: str, size: int) -> str | None:
    """Why a file is not parsed at all (its name, its size), or None. Cheap: no content read."""
    problem = path_problem(path)
    if problem is not None:
        return f"the file name {problem}; the file is not applied"
    if size > MAX_FILE_BYTES:
        return (
            f"the file is {size:,} bytes, over the limit of {MAX_FILE_BYTES:,} bytes (1 MiB) for a"
            " config file; it is not read"
        )
    return None


def refused(path: str, reason: str) -> ParsedFile:
    """A file that is reported and not parsed: a bad name or size, a symbolic link, not a file."""
    error = ConfigError(printable_path(path), None, "", reason)
    return ParsedFile(path, kind_of(path), (), (error,), b"", unread=reason)


def printable_path(path: str) -> str:
    """`path` as safe text for a report: unprintable characters and non-UTF-8 bytes escaped."""
    if path.isprintable():
        return path
    return "".join(char if char.isprintable() else _escaped(char) for char in path)


def _escaped(char: str) -> str:
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that is not UTF-8, as os and pygit2 decode it
        return f"\\x{code - 0xDC00:02x}"
    return repr(char)[1:-1] if code < 0x10000 else f"\\U{code:08x}"


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


def failed_with(parsed: ParsedFile, problems: Sequence[Problem]) -> ParsedFile:
    """`parsed`, valid until a check beyond the models found `problems` in it (a secret that does
    not decrypt): a file with errors, so its last good version stays in force."""
    owners = {doc.user_id for doc in parsed.objects if not isinstance(doc, User)}
    declared = owners.pop() if len(owners) == 1 else None
    errors = tuple(located(parsed.path, parsed.text, problems))
    return ParsedFile(parsed.path, parsed.kind, (), errors, parsed.text, declared)


def _declared_user_id(data: dict[str, Any]) -> int | None:
    user_id = data.get("user_id")
    is_id = isinstance(user_id, int) and not isinstance(user_id, bool) and user_id > 0
    return user_id if is_id else None


def _users(path: str, text: bytes, data: Any) -> ParsedFile:
    if not isinstance(data, list):
        error = ConfigError(path, 1, "", f"expected a list of users, got {_yaml_type(data)}")
        return ParsedFile(path, Kind.USER, (), (error,), text)
    users: list[User] = []
    problems: list[Problem] = []
    seen: dict[int, int] = {}
    for index, item in enumerate(data):
        try:
            user = User.model_validate(item)
        except ValidationError as exc:
            problems.extend(_problems(exc, Kind.USER, prefix=(index,)))
            continue
        if user.id in seen:
            message = f"user id {user.id} is already used by item {seen[user.id]} of this list"
            problems.append(((index, "id"), message))
            continue
        seen[user.id] = index
        users.append(user)
    return ParsedFile(path, Kind.USER, tuple(users), tuple(located(path, text, problems)), text)


def _validate(kind: Kind, data: dict[str, Any]) -> Document:
    adapter = _ADAPTERS[kind]
    if isinstance(adapter, TypeAdapter):
        document: Document = adapter.validate_python(data)
        return document
    return adapter.model_validate(data)  # type: ignore[return-value]


Problem = tuple[Sequence[str | int], str]
"""A problem found in a file's data: where (keys and list indexes), and why."""


def validation_errors(
    path: str,
    text: bytes,
    exc: ValidationError,
    kind: Kind,
    prefix: Sequence[str | int] = (),
) -> list[ConfigError]:
    """One ConfigError per pydantic error, with the YAML line of the offending key."""
    return located(path, text, _problems(exc, kind, prefix))


def _problems(exc: ValidationError, kind: Kind, prefix: Sequence[str | int]) -> list[Problem]:
    problems: list[Problem] = []
    for error in exc.errors(include_url=False):
        location = list(error["loc"])
        # A discriminated union puts the chosen tag in the location: it is not a YAML key.
        if kind is Kind.DESTINATION and location and location[0] in _DESTINATION_TAGS:
            location = location[1:]
        problems.append(([*prefix, *location], _message(error)))
    return problems


def located(path: str, text: bytes, problems: Sequence[Problem]) -> list[ConfigError]:
    """ConfigErrors with their lines, the document composed once however many there are.

    At most MAX_ERRORS_PER_FILE are reported: a list of 100,000 bad items is one mistake, and
    reporting it must not cost more than the file.
    """
    # One location past the shown ones: where the problems left out begin.
    lines = yamlsyntax.lines_of(
        text, [location for location, _ in problems[: MAX_ERRORS_PER_FILE + 1]]
    )
    errors = [
        ConfigError(path, line, ".".join(str(part) for part in location), message)
        for (location, message), line in zip(problems, lines[:MAX_ERRORS_PER_FILE], strict=False)
    ]
    if len(problems) > MAX_ERRORS_PER_FILE:
        left_out = len(problems) - MAX_ERRORS_PER_FILE
        message = f"{left_out:,} more problems in this file, from this line on, are not listed"
        errors.append(ConfigError(path, lines[-1], "", message))
    return errors


def _message(error: Any) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown field (check its spelling and indentation)"
    if kind == "missing":
        return "required field is missing"
    message: str = error["msg"]
    message = message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    # Validators quote the value they refuse, and a value can be most of a 1 MiB file.
    return message if len(message) <= _MAX_MESSAGE else f"{message[: _MAX_MESSAGE - 3]}..."


def _yaml_type(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"the scalar {yamlsyntax.short_repr(value)}"
