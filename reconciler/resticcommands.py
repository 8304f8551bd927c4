"""restic's command lines, environment and answers, as pure functions (restic.py runs them).

Secrets go to restic through its environment (RESTIC_PASSWORD, AWS_*), never its argv, where any
user of the backup host could read them; the repository string goes there too, because a
`rest:` or `s3:` URL may carry credentials of its own.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from reconciler.models import Duration, ResticDestination, SecretRef
from reconciler.retention import Decision, Policy, period_key

RESTIC = "restic"
MINIMUM_VERSION = (0, 14, 0)
_VERSION = re.compile(rb"^restic (\d+)\.(\d+)\.(\d+)")


class ResticProblem(StrEnum):
    INCOMPLETE = "the snapshot is incomplete (some input could not be read)"
    NO_REPOSITORY = "there is no restic repository at this location"
    LOCKED = "the repository is locked by another restic process"
    WRONG_PASSWORD = "the repository password is wrong"  # noqa: S105 (a message, not a secret)
    FAILED = "restic failed"


# restic 0.14 exits with 1 for most of these; its later releases have codes of their own.
_CODES = {
    3: ResticProblem.INCOMPLETE,
    10: ResticProblem.NO_REPOSITORY,
    11: ResticProblem.LOCKED,
    12: ResticProblem.WRONG_PASSWORD,
}
_MESSAGES = (
    ("repository is already locked", ResticProblem.LOCKED),
    ("wrong password or no key found", ResticProblem.WRONG_PASSWORD),
    ("is there a repository at the following location", ResticProblem.NO_REPOSITORY),
    ("unable to open config file", ResticProblem.NO_REPOSITORY),
)


def classify(returncode: int, stderr: str) -> ResticProblem | None:
    """What a restic exit means (None: success), by its code or, for 0.14's 1, its message."""
    if returncode == 0:
        return None
    if returncode in _CODES:
        return _CODES[returncode]
    lowered = stderr.lower()
    for text, problem in _MESSAGES:
        if text in lowered:
            return problem
    return ResticProblem.FAILED


def restic_environment(
    destination: ResticDestination, resolve: Callable[[SecretRef], str], base: Mapping[str, str]
) -> dict[str, str]:
    """`base` (the daemon's environment, for PATH and restic's cache under HOME) plus the
    repository and its secrets."""
    env = {
        key: value
        for key, value in base.items()
        if not key.startswith(("RESTIC_", "AWS_"))  # only what the destination says counts
    }
    env["RESTIC_REPOSITORY"] = destination.repository
    env["RESTIC_PASSWORD"] = resolve(destination.password)
    if destination.access_key_id is not None:
        env["AWS_ACCESS_KEY_ID"] = resolve(destination.access_key_id)
    if destination.secret_access_key is not None:
        env["AWS_SECRET_ACCESS_KEY"] = resolve(destination.secret_access_key)
    return env


def task_tag(task_id: int) -> str:
    return f"task:{task_id}"


def stdin_path(directory: str, name: str) -> str:
    """The path a backup is stored under in its snapshot (restic roots it at `/`)."""
    return f"{directory}/{name}" if directory else name


def init_argv() -> list[str]:
    return [RESTIC, "init", "--quiet"]


def unlock_argv() -> list[str]:
    """`restic unlock`: removes stale locks only (of processes gone, or older than 30 min)."""
    return [RESTIC, "unlock"]


def version_argv() -> list[str]:
    return [RESTIC, "version"]


def backup_argv(
    directory: str, name: str, tags: Iterable[str], taken_at: datetime | None = None
) -> list[str]:
    """`taken_at` (aware) is the snapshot's time, given as a wall time on its own clock: restic
    reads `--time` in the zone of its TZ, which is to be that clock's (see `snapshot_time`)."""
    argv = [RESTIC, "backup", "--stdin", "--stdin-filename", stdin_path(directory, name)]
    for tag in tags:
        argv += ["--tag", tag]
    if taken_at is not None:
        argv += ["--time", taken_at.strftime("%Y-%m-%d %H:%M:%S")]
    return [*argv, "--json"]


def snapshots_argv() -> list[str]:
    return [RESTIC, "snapshots", "--json", "--no-lock"]


def dump_argv(snapshot_id: str, directory: str, name: str) -> list[str]:
    return [RESTIC, "dump", snapshot_id, "/" + stdin_path(directory, name)]


def forget_argv(snapshot_ids: Iterable[str]) -> list[str]:
    return [RESTIC, "forget", "--json", "--", *snapshot_ids]


def restic_duration(duration: Duration) -> str:
    """A `keep.within` span as restic writes it (`1y2m10d5h`: restic has no week unit)."""
    parts = zip(
        (duration.years, duration.months, duration.weeks * 7 + duration.days, duration.hours),
        "ymdh",
        strict=True,
    )
    return "".join(f"{count}{unit}" for count, unit in parts if count)


def forget_policy_argv(task_id: int, policy: Policy, *, dry_run: bool) -> list[str]:
    """`restic forget` of the task's snapshots (its tag, in one group) by `policy`. The newest is
    always kept (`--keep-last` at least 1), as every other destination's retention does."""
    argv = [RESTIC, "forget", "--json", "--tag", task_tag(task_id), "--group-by", ""]
    argv += ["--keep-last", str(max(policy.last or 0, 1))]
    for rule in ("hourly", "daily", "weekly", "monthly", "yearly"):
        count: int | None = getattr(policy, rule)
        if count is not None:
            argv += [f"--keep-{rule}", str(count)]
    if policy.within is not None:
        argv += ["--keep-within", restic_duration(policy.within)]
    return [*argv, "--dry-run"] if dry_run else argv


def prune_argv(*, dry_run: bool) -> list[str]:
    return [RESTIC, "prune", "--dry-run"] if dry_run else [RESTIC, "prune"]


def check_argv(read_data_subset: str) -> list[str]:
    return [RESTIC, "check", f"--read-data-subset={read_data_subset}"]


def parse_version(output: bytes) -> tuple[int, int, int] | None:
    found = _VERSION.match(output.strip())
    if found is None:
        return None
    major, minor, patch = (int(part) for part in found.groups())
    return major, minor, patch


@dataclass(frozen=True, slots=True)
class BackupSummary:
    snapshot_id: str
    data_added: int
    total_bytes_processed: int


@dataclass(frozen=True, slots=True)
class SnapshotEntry:
    id: str
    short_id: str
    time: str  # RFC 3339, as restic wrote it
    paths: tuple[str, ...]
    tags: tuple[str, ...]


def parse_backup_line(line: bytes) -> BackupSummary | dict[str, object] | None:
    """One line of `restic backup --json`: the summary, a status message, or None (not JSON)."""
    try:
        message = json.loads(line)
    except ValueError:
        return None
    if not isinstance(message, dict):
        return None
    if message.get("message_type") == "summary":
        return BackupSummary(
            str(message["snapshot_id"]),
            int(message.get("data_added", 0)),
            int(message.get("total_bytes_processed", 0)),
        )
    return message


def parse_snapshots(output: bytes) -> list[SnapshotEntry]:
    listed = json.loads(output or b"[]")
    if not isinstance(listed, list):
        raise ValueError("restic snapshots --json did not answer a list")
    return [
        SnapshotEntry(
            str(item["id"]),
            str(item.get("short_id", str(item["id"])[:8])),
            str(item["time"]),
            tuple(str(path) for path in item.get("paths") or ()),
            tuple(str(tag) for tag in item.get("tags") or ()),
        )
        for item in listed
    ]


@dataclass(frozen=True, slots=True)
class ForgetVerdict:
    decision: Decision
    snapshot_id: str


def parse_forget(output: bytes, directory: str) -> list[ForgetVerdict]:
    """`restic forget --json` as decisions, newest first: a snapshot's name is its file's under
    `directory` (the task's storage path), its reasons restic's, in this daemon's words (`daily
    2026-11-30`, `last 2`, `within 7d`). restic 0.14's reasons name no snapshot id, so they are
    matched by the snapshot's time, paths and tree."""
    groups = json.loads(output or b"[]")
    if not isinstance(groups, list):
        raise ValueError("restic forget --json did not answer a list")
    found: list[tuple[datetime, str, str, bool, tuple[str, ...]]] = []
    for group in groups:
        matches = {
            _identity(reason["snapshot"]): tuple(
                str(match) for match in reason.get("matches") or ()
            )
            for reason in group.get("reasons") or ()
        }
        for keep, snapshots in ((True, group.get("keep")), (False, group.get("remove"))):
            for snapshot in snapshots or ():
                paths = tuple(str(path) for path in snapshot.get("paths") or ())
                taken = datetime.fromisoformat(str(snapshot["time"]))
                reasons = matches.get(_identity(snapshot), ()) if keep else ()
                name = _snapshot_name(paths, directory)
                found.append((taken, str(snapshot["id"]), name, keep, reasons))
    found.sort(key=lambda item: item[0], reverse=True)
    verdicts = []
    last = 0
    for taken, snapshot_id, name, keep, reasons in found:
        if "last snapshot" in reasons:
            last += 1
        words = tuple(_in_our_words(reason, taken, last) for reason in reasons)
        decision = Decision(name, taken.astimezone(UTC), keep, words)
        verdicts.append(ForgetVerdict(decision, snapshot_id))
    return verdicts


def _identity(snapshot: dict[str, object]) -> tuple[str, tuple[str, ...], str]:
    paths = snapshot.get("paths")
    listed = tuple(str(path) for path in paths) if isinstance(paths, list) else ()
    return str(snapshot["time"]), listed, str(snapshot.get("tree", ""))


def _snapshot_name(paths: tuple[str, ...], directory: str) -> str:
    if len(paths) != 1:
        return " ".join(paths) or "(no path)"
    prefix = "/" + stdin_path(directory, "")
    return paths[0].removeprefix(prefix) if paths[0].startswith(prefix) else paths[0]


def _in_our_words(reason: str, taken: datetime, last: int) -> str:
    """restic's `daily snapshot` is `daily 2026-11-30`: the period it stands for, in the time
    zone the snapshot was taken in (restic buckets by that); its `last snapshot` is `last N`."""
    rule = reason.removesuffix(" snapshot")
    if rule == "last":
        return f"last {last}"
    if reason.endswith(" snapshot") and rule in ("hourly", "daily", "weekly", "monthly", "yearly"):
        return f"{rule} {period_key(rule, taken)}"
    return reason


def describe_message(message: dict[str, object]) -> str | None:
    """A run-log line for a `restic backup --json` message: its status (how much restic has
    read) or an error it reports and goes on past; None for anything else."""
    kind = message.get("message_type")
    if kind == "status":
        done = message.get("bytes_done", 0)
        seconds = message.get("seconds_elapsed", 0)
        if isinstance(done, int) and isinstance(seconds, int):
            return f"restic has read {done / 1e6:,.1f} MB in {seconds} s"
    if kind == "error":
        error = message.get("error")
        text = error.get("message") if isinstance(error, dict) else error
        return f"restic error: {text} ({message.get('during', 'backup')} {message.get('item', '')})"
    return None
