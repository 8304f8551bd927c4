"""Backup file names, and the retention policy: which of a task's backups to keep, and why.
Pure logic, no I/O.

A name is `[<appended_filename>_]backup_<task id>_<UTC YYYYmmddHHMMSS>.<extension>`. Retention only
ever decides on names that parse as the task's own, so a file someone else put in the same
directory, or another task's backup (task 1 against 11 or 111), is never deleted. The policy is
restic's `forget` (`storage.keep`), decided from the names alone, so backups the state store never
saw count like the rest.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from reconciler.models import Duration, Storage, parse_duration

_STAMP = "%Y%m%d%H%M%S"
_FIRST_YEAR, _LAST_YEAR = 1970, 9998
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
    if not _FIRST_YEAR <= taken_at.year <= _LAST_YEAR:  # no run made it; and any timezone
        return None  # can show it without leaving datetime's range
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


@dataclass(frozen=True, slots=True)
class Policy:
    """Which backups to keep (restic's `forget` rules). A count is how many calendar periods (or,
    for `last`, backups) to keep one backup for; None leaves the rule out. `within` keeps every
    backup newer than the newest minus that duration. No rule at all keeps everything."""

    last: int | None = None
    hourly: int | None = None
    daily: int | None = None
    weekly: int | None = None
    monthly: int | None = None
    yearly: int | None = None
    within: Duration | None = None

    def __post_init__(self) -> None:
        for rule in ("last", *_PERIODS):
            count = getattr(self, rule)
            if count is not None and count < 1:
                raise ValueError(f"keep.{rule} must be 1 or more, got {count}")

    @property
    def keeps_everything(self) -> bool:
        return self == Policy()


@dataclass(frozen=True, slots=True)
class Decision:
    name: str
    taken_at: datetime  # UTC
    keep: bool
    reasons: tuple[str, ...]  # why it is kept (`daily 2026-11-30`, `last 3`); empty when removed


# Each calendar rule's period key, as restic buckets snapshots.
_PERIODS: dict[str, str] = {
    "hourly": "%Y-%m-%dT%H",
    "daily": "%Y-%m-%d",
    "weekly": "%G-W%V",
    "monthly": "%Y-%m",
    "yearly": "%Y",
}


def period_key(rule: str, moment: datetime) -> str:
    """The period of a calendar rule (`daily`...) that `moment` falls in, on its own clock."""
    return moment.strftime(_PERIODS[rule])


def policy_for(storage: Storage) -> Policy:
    """The policy a task's storage asks for: `keep` with `max_backups` as its `last` when that is
    given explicitly; without `keep`, `max_backups` alone (0: keep everything)."""
    keep = storage.keep
    if keep is None:
        return Policy(last=storage.max_backups or None)
    last = keep.last
    if last is None and "max_backups" in storage.model_fields_set:
        last = storage.max_backups
    within = parse_duration(keep.within) if keep.within is not None else None
    return Policy(last, keep.hourly, keep.daily, keep.weekly, keep.monthly, keep.yearly, within)


def decide(
    names: Iterable[str],
    task_id: int,
    appended_filename: str | None,
    policy: Policy,
    zone: ZoneInfo,
    protect: Iterable[str] = (),
) -> list[Decision]:
    """Keep or remove for each of the task's own backups among `names`, newest first.

    Rules are combined with OR. Walking newest first, a calendar rule keeps the first (newest)
    backup of each period until it has kept its count; one it cannot fill also keeps the oldest
    backup. The newest backup and those in `protect` (the one just written) are always kept.
    Names that are not the task's own never appear in the answer.
    """
    own = own_backups(names, task_id, appended_filename)
    newest_first = sorted(own, key=lambda name: (own[name].taken_at, name), reverse=True)
    reasons: dict[str, list[str]] = {name: [] for name in newest_first}
    if policy.keeps_everything:
        for name in newest_first:
            reasons[name].append("max_backups 0 keeps all")
    if policy.last is not None:
        for position, name in enumerate(newest_first[: policy.last], start=1):
            reasons[name].append(f"last {position}")
    for rule in _PERIODS:
        count: int | None = getattr(policy, rule)
        if count is None:
            continue
        kept: list[str] = []
        seen: str | None = None
        for name in newest_first:
            if len(kept) == count:
                break
            key = period_key(rule, own[name].taken_at.astimezone(zone))
            if key != seen:
                seen = key
                kept.append(name)
                reasons[name].append(f"{rule} {key}")
        if len(kept) < count and newest_first and kept[-1] != newest_first[-1]:
            reasons[newest_first[-1]].append(f"oldest ({rule} {count} not filled)")
    if policy.within is not None and newest_first:
        cutoff = policy.within.before(own[newest_first[0]].taken_at, zone)
        for name in newest_first:
            if own[name].taken_at > cutoff:
                reasons[name].append(f"within {policy.within.text}")
    # Every rule keeps at least the newest already; these hold even if that ever changed.
    if newest_first and not reasons[newest_first[0]]:
        reasons[newest_first[0]].append("newest")
    for name in set(protect) & reasons.keys():
        if not reasons[name]:
            reasons[name].append("just written")
    return [
        Decision(name, own[name].taken_at, bool(reasons[name]), _unique(reasons[name]))
        for name in newest_first
    ]


def _unique(reasons: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(reasons))
