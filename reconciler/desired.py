"""The desired state: every file's objects resolved into runnable tasks. Pure.

`build_desired(files, previous)` is the whole rule book, applied from scratch on every reconcile
(level-triggered) but cheap, because unchanged objects are reused by identity. Told which files
changed, an edit that cannot move anything else (task files whose ids, owners and health stay as
they were) revises just their tasks: the same result, at the cost of what changed.

- A file with errors keeps the objects of its last good version in force, so a typo never takes a
  working schedule down. A deleted file takes its objects with it.
- Two files claiming one id: the file that already held the id keeps it; the newcomer is rejected
  and reported (and falls back to its own last good objects, if any).
- A task must name an existing user, server, destination and notification streams, all owned by
  the task's user. A task that fails this keeps running on its last good snapshot (`ResolvedTask`
  carries the server and destination it ran with) until it is fixed. This is the one ownership
  rule: the API checks a task it is about to write with `reference_problems`, the same check.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

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
    ResticDestination,
    SourceType,
    User,
)
from reconciler.types import ConfigError

Key = tuple[Kind, int]


@dataclass(frozen=True, slots=True)
class _Resolution:
    """How one task resolved, and from exactly which objects; reused while those are unchanged."""

    inputs: tuple[object, ...]
    task: ResolvedTask | None
    problems: tuple[ConfigError, ...]


@dataclass(frozen=True, slots=True)
class ReferenceProblem:
    """A reference of a task that does not resolve: the field (and the position in a list of
    references), and why."""

    field: str
    message: str
    index: int | None = None


@dataclass(frozen=True)
class DesiredState:
    users: Mapping[int, User] = field(default_factory=dict)
    servers: Mapping[int, RemoteServer] = field(default_factory=dict)
    destinations: Mapping[int, Destination] = field(default_factory=dict)
    notifications: Mapping[int, NotificationStream] = field(default_factory=dict)
    tasks: Mapping[int, ResolvedTask] = field(default_factory=dict)
    # The file each task in force comes from (a task kept on its last good snapshot included).
    task_paths: Mapping[int, str] = field(default_factory=dict)
    # Which file provides each object, and the version of each file whose objects are in force
    # (the file itself, or its last good version while it is broken or rejected).
    owners: Mapping[Kind, Mapping[int, str]] = field(default_factory=dict)
    good_files: Mapping[str, ParsedFile] = field(default_factory=dict, repr=False)
    # Every file of the revision as it parsed (broken ones included), its text with it: what an
    # edit of the revision starts from.
    files: Mapping[str, ParsedFile] = field(default_factory=dict, repr=False)
    errors: tuple[ConfigError, ...] = ()
    # The users each file with an error belongs to (see `file_users`); empty: operators only.
    error_users: Mapping[str, frozenset[int]] = field(default_factory=dict)
    resolutions: Mapping[int, _Resolution] = field(default_factory=dict, repr=False)
    # The (kind, id) pairs more than one current file claims.
    contested: frozenset[Key] = field(default_factory=frozenset, repr=False)
    # The task ids whose resolved task may differ from the state this one was built from; None:
    # any of them. Says how the state was built, not what it is, so equality ignores it.
    revised: frozenset[int] | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class _Referenced:
    """The objects tasks name, by kind."""

    users: Mapping[int, User]
    servers: Mapping[int, RemoteServer]
    destinations: Mapping[int, Destination]
    notifications: Mapping[int, NotificationStream]


Objects = dict[Kind, dict[int, Any]]
Owners = dict[Kind, dict[int, str]]


def build_desired(
    files: Mapping[str, ParsedFile],
    previous: DesiredState,
    changed: Collection[str] | None = None,
) -> DesiredState:
    """The desired state of `files`, after `previous`.

    `changed`: the paths whose entry in `files` differs from the files `previous` was built from
    (added, edited or gone), if the caller knows them. The result is the same either way.
    """
    if changed is not None:
        revised = _revise_tasks(files, previous, changed)
        if revised is not None:
            return revised
    errors: list[ConfigError] = [error for parsed in files.values() for error in parsed.errors]
    owners, objects, rejected, contested = _claim_ids(files, previous, errors)
    good_files = _fall_back_to_last_good(files, previous, owners, objects, rejected)

    users: dict[int, User] = objects[Kind.USER]
    servers: dict[int, RemoteServer] = objects[Kind.SERVER]
    destinations: dict[int, Destination] = objects[Kind.DESTINATION]
    notifications: dict[int, NotificationStream] = objects[Kind.NOTIFICATION]
    task_owners = owners[Kind.TASK]
    referenced = _Referenced(users, servers, destinations, notifications)
    tasks: dict[int, ResolvedTask] = {}
    resolutions: dict[int, _Resolution] = {}
    for task_id, task in objects[Kind.TASK].items():
        last = _task_resolution(task, task_owners[task_id], referenced, files, previous)
        resolutions[task_id] = last
        if last.problems:
            errors.extend(last.problems)
        if last.task is not None:
            tasks[task_id] = last.task

    return DesiredState(
        users=users,
        servers=servers,
        destinations=destinations,
        notifications=notifications,
        tasks=tasks,
        task_paths={task_id: task_owners[task_id] for task_id in tasks},
        owners=owners,
        good_files=good_files,
        files=files,
        errors=_sorted_errors(errors),
        error_users=_error_users(errors, files, previous),
        resolutions=resolutions,
        contested=contested,
    )


def _revise_tasks(
    files: Mapping[str, ParsedFile], previous: DesiredState, changed: Collection[str]
) -> DesiredState | None:
    """`build_desired` for an edit of task files alone, or None when the edit can move more.

    Each changed file must be a task file, valid now, that was valid, in force and without any
    error before, with the same ids, none of them claimed by another file: then no id changes
    hands, no file starts or stops falling back, and only its own tasks resolve anew.
    """
    task_owners = previous.owners.get(Kind.TASK, {})
    for path in changed:
        parsed, last = files.get(path), previous.good_files.get(path)
        if (
            parsed is None
            or last is None
            or not parsed.ok
            or parsed.kind is not Kind.TASK
            or last.kind is not Kind.TASK
            or path in previous.error_users
        ):
            return None
        ids = [document.id for document in parsed.objects]
        if ids != [document.id for document in last.objects] or any(
            task_owners.get(task_id) != path or (Kind.TASK, task_id) in previous.contested
            for task_id in ids
        ):
            return None
    tasks, task_paths = dict(previous.tasks), dict(previous.task_paths)
    resolutions = dict(previous.resolutions)
    errors = list(previous.errors)  # none of them is a changed file's: see above
    referenced = _Referenced(
        previous.users, previous.servers, previous.destinations, previous.notifications
    )
    for path in changed:
        for task in files[path].objects:
            assert isinstance(task, BackupTask)
            resolution = _task_resolution(task, path, referenced, files, previous)
            resolutions[task.id] = resolution
            errors.extend(resolution.problems)
            if resolution.task is None:
                tasks.pop(task.id, None)
                task_paths.pop(task.id, None)
            else:
                tasks[task.id] = resolution.task
                task_paths[task.id] = path
    good_files = dict(previous.good_files)
    good_files.update((path, files[path]) for path in changed)
    return DesiredState(
        users=previous.users,
        servers=previous.servers,
        destinations=previous.destinations,
        notifications=previous.notifications,
        tasks=tasks,
        task_paths=task_paths,
        owners=previous.owners,
        good_files=good_files,
        files=files,
        errors=_sorted_errors(errors),
        error_users=_error_users(errors, files, previous),
        resolutions=resolutions,
        contested=previous.contested,
        revised=frozenset(task.id for path in changed for task in files[path].objects),
    )


def _task_resolution(
    task: BackupTask,
    path: str,
    objects: _Referenced,
    files: Mapping[str, ParsedFile],
    previous: DesiredState,
) -> _Resolution:
    """How `task` (of the file at `path`) resolves against `objects`: the previous resolution
    when its inputs are the same."""
    streams = task.notification_stream_ids
    inputs = (
        task,
        path,
        objects.users.get(task.user_id),
        objects.servers.get(task.remote_server_id),
        objects.destinations.get(task.backup_destination_id),
        tuple(map(objects.notifications.get, streams)) if streams else (),
        _scratch_of(task, objects.servers),
    )
    last = previous.resolutions.get(task.id)
    # Tuple equality checks identity first, so an untouched task costs one comparison.
    if last is None or last.inputs != inputs:
        last = _resolution(task, path, inputs, files, previous)
    return last


def _sorted_errors(errors: list[ConfigError]) -> tuple[ConfigError, ...]:
    return tuple(sorted(errors, key=lambda e: (e.path, e.line or 0, e.field)))


def _error_users(
    errors: list[ConfigError], files: Mapping[str, ParsedFile], previous: DesiredState
) -> dict[str, frozenset[int]]:
    error_paths = {error.path for error in errors}
    return {
        path: file_users(files.get(path), previous.good_files.get(path)) for path in error_paths
    }


def file_users(current: ParsedFile | None, last_good: ParsedFile | None) -> frozenset[int]:
    """The users a file belongs to: the `user_id` it declares, and its last good version's.

    `users.yaml` belongs to no user, nor does a file no user can be read from (one that does not
    parse, or outside the layout): only operators see those.
    """
    users: set[int] = set()
    for version in (current, last_good):
        if version is None or version.kind is Kind.USER:
            continue
        if version.declared_user_id is not None:
            users.add(version.declared_user_id)
        users.update(doc.user_id for doc in version.objects if not isinstance(doc, User))
    return frozenset(users)


def reference_problems(task: BackupTask, desired: DesiredState) -> tuple[ReferenceProblem, ...]:
    """Why `task` would not resolve against `desired`: a user, server, destination or stream it
    names that is not defined or belongs to another user. Empty when it resolves."""
    return tuple(
        _reference_problems(
            task,
            desired.users.get(task.user_id),
            desired.servers.get(task.remote_server_id),
            desired.destinations.get(task.backup_destination_id),
            tuple(map(desired.notifications.get, task.notification_stream_ids)),
            _scratch_of(task, desired.servers),
        )
    )


def _scratch_of(task: BackupTask, servers: Mapping[int, RemoteServer]) -> RemoteServer | None:
    """The server entry `verify.load_into` names, when it names one that is defined."""
    if task.verify is None or task.verify.load_into is None:
        return None
    return servers.get(task.verify.load_into)


def errors_for_user(desired: DesiredState, user_id: int) -> tuple[ConfigError, ...]:
    """The config errors a user's token is shown: those of the files that belong to the user."""
    return tuple(
        error for error in desired.errors if user_id in desired.error_users.get(error.path, ())
    )


def _claim_ids(
    files: Mapping[str, ParsedFile], previous: DesiredState, errors: list[ConfigError]
) -> tuple[Owners, Objects, set[str], frozenset[Key]]:
    owners: Owners = {kind: {} for kind in Kind}
    objects: Objects = {kind: {} for kind in Kind}
    contested: dict[tuple[Kind, int], list[tuple[str, Document]]] = {}
    for path, parsed in files.items():
        kind = parsed.kind
        if kind is None:
            continue
        kind_owners, kind_objects = owners[kind], objects[kind]
        for document in parsed.objects:
            held = kind_owners.get(document.id)
            if held is None:
                kind_owners[document.id] = path
                kind_objects[document.id] = document
            else:
                first = (held, kind_objects[document.id])
                contested.setdefault((kind, document.id), [first]).append((path, document))
    rejected: set[str] = set()
    for (kind, object_id), claims in contested.items():
        holder = previous.owners.get(kind, {}).get(object_id)
        paths = [path for path, _ in claims]
        winner = holder if holder in paths else min(paths)
        winner_owner = next(getattr(doc, "user_id", None) for path, doc in claims if path == winner)
        for path, document in claims:
            if path == winner:
                owners[kind][object_id] = path
                objects[kind][object_id] = document
                continue
            rejected.add(path)
            line = yamlsyntax.line_of(files[path].text, ("id",)) if kind is not Kind.USER else None
            # The error is shown to this file's owner: another user's file is not named to them.
            same_owner = getattr(document, "user_id", None) == winner_owner
            where = winner if same_owner else "a file of another user"
            message = f"{kind} id {object_id} is already defined in {where}; ids must be unique"
            errors.append(ConfigError(path, line, "id", message))
    return owners, objects, rejected, frozenset(contested)


def _fall_back_to_last_good(
    files: Mapping[str, ParsedFile],
    previous: DesiredState,
    owners: Owners,
    objects: Objects,
    rejected: set[str],
) -> dict[str, ParsedFile]:
    """Broken or rejected files keep the objects of their last good version, where still free.

    Returns the version of each file whose objects are in force, for the next reconcile.
    """
    good_files = dict(files)
    for path, parsed in files.items():
        if parsed.ok and path not in rejected:
            continue
        last_good = previous.good_files.get(path)
        if last_good is None:
            del good_files[path]
            continue
        good_files[path] = last_good
        assert last_good.kind is not None
        kind_owners, kind_objects = owners[last_good.kind], objects[last_good.kind]
        for document in last_good.objects:
            if document.id not in kind_owners:
                kind_owners[document.id] = path
                kind_objects[document.id] = document
    return good_files


def _resolution(
    task: BackupTask,
    path: str,
    inputs: tuple[object, ...],
    files: Mapping[str, ParsedFile],
    previous: DesiredState,
) -> _Resolution:
    _, _, owner, server, destination, streams, scratch = inputs
    assert isinstance(streams, tuple)
    assert scratch is None or isinstance(scratch, RemoteServer)
    problems = list(_reference_problems(task, owner, server, destination, streams, scratch))
    if not problems:
        assert isinstance(owner, User)
        assert isinstance(server, RemoteServer)
        last = previous.tasks.get(task.id)
        resolved = _resolve(task, owner, server, destination, streams, scratch, last)
        return _Resolution(inputs, resolved, ())
    text = files[path].text if path in files else b""
    located = tuple(
        ConfigError(
            path,
            yamlsyntax.line_of(text, tuple(problem.field.split("."))),
            problem.field,
            problem.message,
        )
        for problem in problems
    )
    # A task that stops resolving keeps running on its last good snapshot.
    return _Resolution(inputs, previous.tasks.get(task.id), located)


def _reference_problems(
    task: BackupTask,
    owner: object,
    server: object,
    destination: object,
    streams: tuple[object, ...],
    scratch: RemoteServer | None,
) -> Iterator[ReferenceProblem]:
    if owner is None:
        yield ReferenceProblem("user_id", f"user {task.user_id} is not defined in users.yaml")
    if not isinstance(server, RemoteServer):
        message = f"remote server {task.remote_server_id} is not defined"
        yield ReferenceProblem("remote_server_id", message)
    elif server.user_id != task.user_id:
        message = f"remote server {server.id} belongs to another user"
        yield ReferenceProblem("remote_server_id", message)
    if not isinstance(destination, Destination):
        message = f"backup destination {task.backup_destination_id} is not defined"
        yield ReferenceProblem("backup_destination_id", message)
    elif destination.user_id != task.user_id:
        message = f"backup destination {destination.id} belongs to another user"
        yield ReferenceProblem("backup_destination_id", message)
    elif isinstance(destination, ResticDestination):
        yield from _restic_problems(task)
    for index, (stream_id, stream) in enumerate(
        zip(task.notification_stream_ids, streams, strict=True)
    ):
        if not isinstance(stream, NotificationStream):
            message = f"notification stream {stream_id} is not defined"
            yield ReferenceProblem("notification_stream_ids", message, index)
        elif stream.user_id != task.user_id:
            message = f"notification stream {stream_id} belongs to another user"
            yield ReferenceProblem("notification_stream_ids", message, index)
    if task.verify is not None and task.verify.load_into is not None:
        yield from _load_into_problems(task, task.verify.load_into, server, scratch)


def _load_into_problems(
    task: BackupTask, server_id: int, server: object, scratch: RemoteServer | None
) -> Iterator[ReferenceProblem]:
    field = "verify.load_into"
    if task.source.type is not SourceType.DATABASE:
        message = "load_into loads a database dump; this task backs up files"
        yield ReferenceProblem(field, message)
    elif scratch is None:
        yield ReferenceProblem(field, f"remote server {server_id} is not defined")
    elif scratch.user_id != task.user_id:
        yield ReferenceProblem(field, f"remote server {server_id} belongs to another user")
    elif scratch.database is None or scratch.database.engine is None:
        message = (
            f"remote server {server_id} has no database.engine: the drill must know which "
            "client (mysql or psql) loads the dump there"
        )
        yield ReferenceProblem(field, message)
    elif isinstance(server, RemoteServer) and server.database is not None:
        engine = server.database.engine
        if engine is not None and engine is not scratch.database.engine:
            message = (
                f"remote server {server_id} runs {scratch.database.engine}, but the task dumps "
                f"{engine}: a dump loads only into its own engine"
            )
            yield ReferenceProblem(field, message)


def _restic_problems(task: BackupTask) -> Iterator[ReferenceProblem]:
    if task.encryption_password is not None:
        message = "a restic destination encrypts the repository itself: remove encryption_password"
        yield ReferenceProblem("encryption_password", message)
    for setting in ("compression", "compression_level"):
        if setting in task.storage.model_fields_set:
            message = (
                f"a restic destination compresses by itself: remove storage.{setting} "
                "(its stream is stored uncompressed so that restic can deduplicate it)"
            )
            yield ReferenceProblem(f"storage.{setting}", message)


def _resolve(
    task: BackupTask,
    owner: User,
    server: RemoteServer,
    destination: object,
    notifications: tuple[object, ...],
    scratch: RemoteServer | None,
    last: ResolvedTask | None,
) -> ResolvedTask:
    if (
        last is not None
        and last.task == task
        and last.owner == owner
        and last.server == server
        and last.destination == destination
        and last.notifications == notifications
        and last.scratch_server == scratch
    ):
        # Equal content (a re-parsed but unchanged file): keep the very object the scheduler has.
        return last
    # Every part was validated on its own; constructing without revalidation keeps a 10,000 task
    # reconcile cheap.
    return ResolvedTask.model_construct(
        task=task,
        owner=owner,
        server=server,
        destination=destination,
        notifications=notifications,
        scratch_server=scratch,
    )


def node_local_destinations(desired: DesiredState) -> list[str]:
    """A warning for each local destination, for a config set that a cluster runs: a local
    destination is one node's directory, which the other nodes cannot read."""
    owners = desired.owners.get(Kind.DESTINATION, {})
    return [
        f"{owners.get(destination_id, 'destination')}: destination {destination_id}"
        f" ({destination.label}) is type local: in a cluster each node writes its own directory,"
        " and restores, rotation and ls on another node do not see those backups; use an sftp,"
        " s3 or restic destination"
        for destination_id, destination in sorted(desired.destinations.items())
        if isinstance(destination, LocalDestination)
    ]
