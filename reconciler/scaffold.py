"""The files of a new config repository (`reconciler init`). Pure: the facts about the host come in.

Every YAML file is rendered from a model instance, so a field renamed in `models` fails here
rather than in a newcomer's first `validate`, and the whole set is parsed back with the daemon's
own parser and rule book before it is returned: init can only write what `validate` and `serve`
accept, and the files can never drift from the models.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from reconciler import yamlsyntax
from reconciler.desired import DesiredState, build_desired
from reconciler.documents import parse_file
from reconciler.models import (
    BackupTask,
    Document,
    Frequency,
    LocalDestination,
    RemoteServer,
    SourceType,
    User,
)
from reconciler.taskfile import new_task_text, task_file_path
from reconciler.types import ReconcilerError

USERS_FILE = "users.yaml"
SERVER_FILE = "servers/this-machine.yaml"
DESTINATION_FILE = "destinations/local-disk.yaml"
README_FILE = "README.md"
TASK_LABEL = "This config repository"
_M = TypeVar("_M", bound=BaseModel)


class ScaffoldError(ReconcilerError):
    """A fact about the host cannot go into a valid config file (an odd git user.name, say)."""


@dataclass(frozen=True, slots=True)
class Host:
    """What `reconciler init` found out about the backup host it runs on."""

    login: str  # the SSH user of the server on loopback
    private_key: str  # absolute path of the key file the daemon logs in with
    key_exists: bool  # False: `private_key` is the conventional path, still to be created
    person_name: str  # user 1: the person who will use the API and commit
    person_email: str
    backup_dir: str  # absolute: where the local destination writes
    repository: str  # absolute path of the new repository: what the example task archives


def scaffold_files(host: Host) -> dict[str, str]:
    """The new repository's files (path -> text), checked as `validate` checks them."""
    user = _build(User, "the user", id=1, name=host.person_name, email=host.person_email)
    server = _build(
        RemoteServer,
        "the server",
        id=1,
        user_id=1,
        label="This machine",
        host="127.0.0.1",
        port=22,
        username=host.login,
        private_key=host.private_key,
        accept_new_host_keys=True,
    )
    destination = _build(
        LocalDestination,
        "the destination",
        id=1,
        user_id=1,
        label="Local disk",
        type="local",
        path=host.backup_dir,
    )
    task = _build(
        BackupTask,
        "the example task",
        id=1,
        user_id=1,
        label=TASK_LABEL,
        description="An example: archives this config repository every night",
        remote_server_id=server.id,
        backup_destination_id=destination.id,
        source={"type": SourceType.FILES.value, "path": host.repository},
        schedule={"frequency": Frequency.DAILY.value, "time": "03:00", "timezone": "UTC"},
        storage={"max_backups": 7, "path": "config-repository"},
    )
    task_path = task_file_path(task.id, task.label)
    rendered: dict[str, tuple[str, Document]] = {
        USERS_FILE: (_users_text([user]), user),
        SERVER_FILE: (_server_text(server, host), server),
        DESTINATION_FILE: (_destination_text(destination), destination),
        task_path: (_task_text(task), task),
    }
    files = {path: text for path, (text, _) in rendered.items()}
    _check(files, {path: document for path, (_, document) in rendered.items()})
    files[README_FILE] = _readme(task_path, host)
    return files


def _build(model: type[_M], what: str, **fields: Any) -> _M:
    """The model of `fields`, which must hold every value exactly as given: a model that
    normalises one (strips a path's trailing space, say) would describe another thing."""
    try:
        built = model(**fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ScaffoldError(f"cannot write {what}: {where}: {first['msg']}") from None
    for name, (given, kept) in _leaves(fields, _fields(built)).items():
        if given != kept:
            raise ScaffoldError(f"cannot write {what}: {name}: {given!r} would read as {kept!r}")
    return built


def _leaves(given: Mapping[str, Any], kept: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    leaves: dict[str, Any] = {}
    for key, value in given.items():
        if isinstance(value, Mapping):
            leaves.update(_leaves(value, kept.get(key, {}), f"{prefix}{key}."))
        else:
            leaves[f"{prefix}{key}"] = (value, kept.get(key))
    return leaves


def _check(files: Mapping[str, str], expected: Mapping[str, Document]) -> None:
    """Parse the rendered files as the daemon does: each must give back exactly its model, and
    the set must resolve without a problem."""
    parsed = {path: parse_file(path, text.encode()) for path, text in files.items()}
    desired = build_desired(parsed, DesiredState())
    for error in desired.errors:
        raise ScaffoldError(f"cannot write a valid config set: {error.render()}")
    for path, document in expected.items():
        if parsed[path].objects != (document,):
            raise ScaffoldError(f"cannot write a valid config set: {path} reads back differently")


def _fields(model: BaseModel) -> dict[str, Any]:
    """The fields init set on purpose (defaults it did not name stay out of the file)."""
    return model.model_dump(mode="json", exclude_unset=True)


class _Dumper(yaml.SafeDumper):
    """PyYAML's safe dumper quotes what a YAML 1.1 reader would misread; this also quotes what
    the daemon's YAML 1.2 reader would (`1e3` is a number there, so is `0o17`)."""


def _represent_text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    node = dumper.represent_str(value)
    try:
        plain_reads_back = yamlsyntax.load(value) == value
    except yamlsyntax.YamlSyntaxError:
        plain_reads_back = False
    if not plain_reads_back and node.style is None:
        node.style = '"'
    return node


_Dumper.add_representer(str, _represent_text)


def _yaml(data: Any) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)


def _comment(*lines: str) -> str:
    return "".join(f"# {line}\n" for line in lines)


def _users_text(users: Sequence[User]) -> str:
    return _comment(
        "The users of this backup host. Servers, destinations and tasks name their owner",
        "by `user_id`; an API token acts as one user (`reconciler token create --user-id 1`)",
        "and its API edits are committed with this name and e-mail as author.",
        "`timezone` (an IANA zone, default UTC) is the zone the API shows local times in.",
    ) + _yaml([_fields(user) for user in users])


def _server_text(server: RemoteServer, host: Host) -> str:
    allow = (
        f"  ssh-copy-id -i {host.private_key}.pub {host.login}@127.0.0.1",
        f"(or append the .pub file to ~{host.login}/.ssh/authorized_keys).",
    )
    key_note = (
        ("The key file exists on this machine; allow it to log in if it cannot yet:", *allow)
        if host.key_exists
        else (
            "No SSH key was found when this file was written: create this one and allow it:",
            f"  ssh-keygen -t ed25519 -f {host.private_key}",
            *allow,
        )
    )
    return _comment(
        "The backup host itself, reached over SSH on loopback: the daemon backs itself up",
        "like any other server, so a first run needs nothing but sshd on this machine.",
        *key_note,
        "accept_new_host_keys trusts the host key seen on the first connection (here, this",
        "machine's own) and refuses it if it ever changes.",
    ) + _yaml(_fields(server))


def _destination_text(destination: LocalDestination) -> str:
    return _comment(
        "A directory on the backup host; created on the first run. Other kinds of",
        "destination: `type: sftp` and `type: s3` (see reconciler's README).",
    ) + _yaml(_fields(destination))


def _task_text(task: BackupTask) -> str:
    return _comment(
        "An example task: a nightly archive of this repository (small, and readable by the",
        "SSH user, so the first run works). Point source.path at what you mean to back up,",
        "or copy this file to tasks/<id>-<name>.yaml with a new id for another task.",
    ) + new_task_text(_fields(task))


def _readme(task_path: str, host: Host) -> str:
    return f"""\
# Backup configuration

This repository is a reconciler config set: the daemon on the backup host runs the backups it
describes, and every commit on `main` is applied within moments.

```
{_layout(task_path, host)}
```

Every object has an integer `id`, unique within its kind and stable forever; files point at each
other by these ids. Sub-folders are allowed (`tasks/team-a/db.yaml`), hidden files and folders
(`.github/`, `.pre-commit-config.yaml`) are ignored, and any other YAML file is an error.

## Working on it

```sh
reconciler validate .                       # check the working tree; exit 1 on any problem
reconciler plan .                           # what committing the working tree would change
reconciler plan --against origin/main .     # a pull request's effect, against the main branch
git commit -am "Back up /srv nightly"       # the daemon applies the commit
```

## Running it

```sh
reconciler serve --repo {host.repository} --state /var/lib/reconciler/state.db
reconciler token create --user-id 1 --name me --state /var/lib/reconciler/state.db
```

The server in `{SERVER_FILE}` logs in as `{host.login}` with the key
`{host.private_key}`, whose public half must be in that user's `~/.ssh/authorized_keys`.
"""


def _layout(task_path: str, host: Host) -> str:
    rows = (
        (USERS_FILE, "the users (a list); an API token acts as one of them"),
        (SERVER_FILE, "a server per file: this machine, over SSH on 127.0.0.1"),
        (DESTINATION_FILE, f"where backups go: {host.backup_dir}"),
        (task_path, "one backup task per file, named <id>-<slug>.yaml"),
        ("notifications/", "optional: where to report runs (apprise URLs)"),
    )
    width = max(len(path) for path, _ in rows) + 2
    return "\n".join(f"{path:<{width}}# {meaning}" for path, meaning in rows)
