"""Backup file names and which old backups a successful run may delete. Pure logic, no I/O.

A name is `[<appended_filename>_]backup_<task id>_<UTC YYYYmmddHHMMSS>.<extension>`. Rotation only
ever touches names that parse as the task's own, so a file someone else put in the same directory,
or another task's backup (task 1 against 11 or 111), is never deleted.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

_STAMP = "%Y%m%d%H%M%S"
# The alphabet models.Storage accepts for appended_filename; no leading dot, so the temporaries
# destinations write (`.<name>.partial`) can never parse as a backup.
_APPENDED = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}"
# `tar.zst`, `sql.zst.gpg`, ...: lowercase parts without '_', which keeps parsing unambiguous even
# when appended_filename itself looks like a backup name.
_EXTENSION = r"[a-z0-9]{1,10}(?:\.[a-z0-9]{1,10}){0,3}"

_APPENDED_RE = re.compile(rf"^{_APPENDED}$")
_EXTENSION_RE = re.compile(rf"^{_EXTENSION}$")
_NAME_RE = re.compile(
    rf"^(?:(?P<appended>{_APPENDED})_)?backup_(?P<task>[1-9][0-9]{{0,18}})_(?P<stamp>[0-9]{{14}})"
    rf"\.(?P<extension>{_EXTENSION})$"
)


@dataclass(frozen=True, slots=True)
class BackupName:
    task_id: int
    appended_filename: str | None
    taken_at: datetime  # UTC, whole seconds
    extension: str


def backup_name(task_id: int, appended_filename: str | None, at: datetime, extension: str) -> str:
    """The file name for a backup of `task_id` taken at `at` (an aware datetime)."""
    if task_id <= 0:
        raise ValueError(f"task id must be positive, got {task_id}")
    if appended_filename is not None and not _APPENDED_RE.match(appended_filename):
        raise ValueError(
            "appended_filename may only use letters, digits, '_', '.' and '-' "
            f"(and not start with '.' or '-'), got {appended_filename!r}"
        )
    if not _EXTENSION_RE.match(extension):
        raise ValueError(
            f"extension must be lowercase dot-separated parts like 'tar.zst', got {extension!r}"
        )
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"backup time must be timezone-aware, got naive {at.isoformat()}")
    prefix = f"{appended_filename}_" if appended_filename is not None else ""
    return f"{prefix}backup_{task_id}_{at.astimezone(UTC).strftime(_STAMP)}.{extension}"


def parse_backup_name(name: str) -> BackupName | None:
    """The parts of a name `backup_name` could have written, or None for anything else."""
    match = _NAME_RE.match(name)
    if match is None:
        return None
    try:
        taken_at = datetime.strptime(match["stamp"], _STAMP).replace(tzinfo=UTC)
    except ValueError:  # fourteen digits that are not a date, such as month 13
        return None
    return BackupName(
        task_id=int(match["task"]),
        appended_filename=match["appended"],
        taken_at=taken_at,
        extension=match["extension"],
    )


def own_backups(
    names: Iterable[str], task_id: int, appended_filename: str | None
) -> dict[str, BackupName]:
    """The names among `names` that are this task's backups (its id and its file-name prefix),
    parsed: another task's files, or the same task's under another prefix, are never its own."""
    own: dict[str, BackupName] = {}
    for name in names:
        parsed = parse_backup_name(name)
        if (
            parsed is not None
            and parsed.task_id == task_id
            and parsed.appended_filename == appended_filename
        ):
            own[name] = parsed
    return own


def backups_to_delete(
    names: Iterable[str],
    task_id: int,
    appended_filename: str | None,
    max_backups: int,
    keep: str,
) -> list[str]:
    """The task's own backups to delete, oldest first, so that `max_backups` remain.

    Call only after a successful run. `keep` (the backup just written) is never returned, and
    `max_backups` 0 means keep everything.
    """
    if max_backups < 0:
        raise ValueError(f"max_backups must be 0 (keep all) or more, got {max_backups}")
    own = own_backups(names, task_id, appended_filename)
    if max_backups == 0 or len(own) <= max_backups:
        return []
    oldest_first = sorted(own, key=lambda name: (own[name].taken_at, name))
    excess = len(own) - max_backups
    return [name for name in oldest_first if name != keep][:excess]
