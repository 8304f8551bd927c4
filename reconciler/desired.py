"""The desired state: every file's objects resolved into runnable tasks. Pure.

`build_desired(files, previous)` is the whole rule book, applied from scratch on every reconcile
(level-triggered) but cheap, because unchanged objects are reused by identity:

- A file with errors keeps the objects of its last good version in force, so a typo never takes a
  working schedule down. A deleted file takes its objects with it.
- Two files claiming one id: the file that already held the id keeps it; the newcomer is rejected
  and reported (and falls back to its own last good objects, if any).
- A task must name an existing user, server, destination and notification streams, all owned by
  the task's user. A task that fails this keeps running on its last good snapshot (`ResolvedTask`
  carries the server and destination it ran with) until it is fixed.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from reconciler import yamlsyntax
from reconciler.documents import Kind, ParsedFile
from reconciler.models import (
    BackupTask,
    Destination,
    Document,
    LocalDestination,
    NotificationStream,
    RemoteServer,
    ResolvedTask,
    S3Destination,
    SftpDestination,
    User,
)
from reconciler.types import ConfigError

Key = tuple[Kind, int]
_T = TypeVar("_T")


def kind_of_document(document: Document) -> Kind:
    if isinstance(document, BackupTask):
        return Kind.TASK
    if isinstance(document, RemoteServer):
        return Kind.SERVER
    if isinstance(document, LocalDestination | SftpDestination | S3Destination):
        return Kind.DESTINATION
    if isinstance(document, NotificationStream):
        return Kind.NOTIFICATION
    return Kind.USER


def key_of(document: Document) -> Key:
    return kind_of_document(document), document.id


@dataclass(frozen=True)
class DesiredState:
    users: Mapping[int, User] = field(default_factory=dict)
    servers: Mapping[int, RemoteServer] = field(default_factory=dict)
    destinations: Mapping[int, Destination] = field(default_factory=dict)
    notifications: Mapping[int, NotificationStream] = field(default_factory=dict)
    tasks: Mapping[int, ResolvedTask] = field(default_factory=dict)
    task_paths: Mapping[int, str] = field(default_factory=dict)
    # Which file provides each object now, and the objects each file provides (fresh or last good).
    owners: Mapping[Key, str] = field(default_factory=dict)
    sources: Mapping[str, tuple[Document, ...]] = field(default_factory=dict)
    errors: tuple[ConfigError, ...] = ()


def build_desired(files: Mapping[str, ParsedFile], previous: DesiredState) -> DesiredState:
    errors: list[ConfigError] = [error for parsed in files.values() for error in parsed.errors]
    owners, objects, rejected = _claim_ids(files, previous, errors)
    _fall_back_to_last_good(files, previous, owners, objects, rejected)

    by_kind: dict[Kind, dict[int, Document]] = {kind: {} for kind in Kind}
    sources: dict[str, list[Document]] = {}
    for key, document in objects.items():
        by_kind[key[0]][key[1]] = document
        sources.setdefault(owners[key], []).append(document)

    users: dict[int, User] = _typed(by_kind[Kind.USER], User)
    servers: dict[int, RemoteServer] = _typed(by_kind[Kind.SERVER], RemoteServer)
    destinations: dict[int, Destination] = by_kind[Kind.DESTINATION]  # type: ignore[assignment]
    notifications = _typed(by_kind[Kind.NOTIFICATION], NotificationStream)
    tasks: dict[int, ResolvedTask] = {}
    task_paths: dict[int, str] = {}
    state = DesiredState(users, servers, destinations, notifications)
    for task_id, document in by_kind[Kind.TASK].items():
        assert isinstance(document, BackupTask)
        path = owners[(Kind.TASK, task_id)]
        problems = list(_reference_problems(document, state))
        if problems:
            text = files[path].text if path in files else b""
            for field_name, message in problems:
                line = yamlsyntax.line_of(text, (field_name,))
                errors.append(ConfigError(path, line, field_name, message))
            last_good = previous.tasks.get(task_id)
            if last_good is not None:
                tasks[task_id] = last_good
                task_paths[task_id] = path
            continue
        tasks[task_id] = _resolve(document, state, previous.tasks.get(task_id))
        task_paths[task_id] = path

    return DesiredState(
        users=users,
        servers=servers,
        destinations=destinations,
        notifications=notifications,
        tasks=tasks,
        task_paths=task_paths,
        owners=owners,
        sources={path: tuple(documents) for path, documents in sources.items()},
        errors=tuple(sorted(errors, key=lambda e: (e.path, e.line or 0, e.field))),
    )


def _claim_ids(
    files: Mapping[str, ParsedFile], previous: DesiredState, errors: list[ConfigError]
) -> tuple[dict[Key, str], dict[Key, Document], set[str]]:
    claimants: dict[Key, list[tuple[str, Document]]] = {}
    for path, parsed in files.items():
        for document in parsed.objects:
            claimants.setdefault(key_of(document), []).append((path, document))
    owners: dict[Key, str] = {}
    objects: dict[Key, Document] = {}
    rejected: set[str] = set()
    for key, claims in claimants.items():
        if len(claims) == 1:
            owners[key], objects[key] = claims[0]
            continue
        holder = previous.owners.get(key)
        paths = [path for path, _ in claims]
        winner = holder if holder in paths else min(paths)
        for path, document in claims:
            if path == winner:
                owners[key], objects[key] = path, document
                continue
            rejected.add(path)
            line = (
                yamlsyntax.line_of(files[path].text, ("id",)) if key[0] is not Kind.USER else None
            )
            message = f"{key[0]} id {key[1]} is already defined in {winner}; ids must be unique"
            errors.append(ConfigError(path, line, "id", message))
    return owners, objects, rejected


def _fall_back_to_last_good(
    files: Mapping[str, ParsedFile],
    previous: DesiredState,
    owners: dict[Key, str],
    objects: dict[Key, Document],
    rejected: set[str],
) -> None:
    """Broken or rejected files keep the objects they provided before, where nobody took them."""
    for path, parsed in files.items():
        if parsed.ok and path not in rejected:
            continue
        for document in previous.sources.get(path, ()):
            key = key_of(document)
            if key not in owners:
                owners[key], objects[key] = path, document


def _reference_problems(task: BackupTask, state: DesiredState) -> Iterator[tuple[str, str]]:
    if task.user_id not in state.users:
        yield "user_id", f"user {task.user_id} is not defined in users.yaml"
    server = state.servers.get(task.remote_server_id)
    if server is None:
        yield "remote_server_id", f"remote server {task.remote_server_id} is not defined"
    elif server.user_id != task.user_id:
        yield "remote_server_id", f"remote server {server.id} belongs to another user"
    destination = state.destinations.get(task.backup_destination_id)
    if destination is None:
        yield (
            "backup_destination_id",
            (f"backup destination {task.backup_destination_id} is not defined"),
        )
    elif destination.user_id != task.user_id:
        yield (
            "backup_destination_id",
            f"backup destination {destination.id} belongs to another user",
        )
    for stream_id in task.notification_stream_ids:
        stream = state.notifications.get(stream_id)
        if stream is None:
            yield "notification_stream_ids", f"notification stream {stream_id} is not defined"
        elif stream.user_id != task.user_id:
            yield (
                "notification_stream_ids",
                f"notification stream {stream_id} belongs to another user",
            )


def _resolve(task: BackupTask, state: DesiredState, last: ResolvedTask | None) -> ResolvedTask:
    owner = state.users[task.user_id]
    server = state.servers[task.remote_server_id]
    destination = state.destinations[task.backup_destination_id]
    streams = tuple(state.notifications[i] for i in task.notification_stream_ids)
    if (
        last is not None
        and last.task is task
        and last.owner is owner
        and last.server is server
        and last.destination is destination
        and len(last.notifications) == len(streams)
        and all(a is b for a, b in zip(last.notifications, streams, strict=True))
    ):
        return last
    # Every part was validated on its own; constructing without revalidation keeps a 10,000 task
    # reconcile cheap.
    return ResolvedTask.model_construct(
        task=task, owner=owner, server=server, destination=destination, notifications=streams
    )


def _typed(documents: dict[int, Document], kind: type[_T]) -> dict[int, _T]:
    return documents  # type: ignore[return-value]
