"""The desired state, as pydantic models. No I/O: files are parsed elsewhere.

Field names follow the API's backup-task resource (the daemon's `/openapi.json`) so that a task
file, an API body and a response speak one vocabulary. Every model forbids unknown keys, so a
typo is an error with a location rather than a silently ignored setting.
"""

from __future__ import annotations

import base64
import binascii
import re
from calendar import monthrange
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import MINYEAR, UTC, datetime, timedelta
from enum import StrEnum
from functools import cache
from typing import Annotated, Any, Literal, get_args
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from croniter import croniter
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


# At most 15 digits: what the API accepts in a URL, exact in JSON clients, and far inside SQLite's
# 64-bit integers (a larger id used to make every reconcile fail on storing it).
MAX_ID = 999_999_999_999_999
Id = Annotated[int, Field(strict=True, gt=0, le=MAX_ID)]
# A year and a day: longer is a typo, and timedelta and the event loop overflow far beyond it.
MAX_RUN_TIMEOUT_SECONDS = 366 * 24 * 3600
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_one_line(value: str) -> str:
    """A label names a thing in lists and commit subjects: one line, no control characters."""
    if _CONTROL.search(value):
        raise ValueError("must be one line of text, without control characters")
    return value


Label = Annotated[
    str, StringConstraints(min_length=1, max_length=255), AfterValidator(check_one_line)
]
# A hostname or an IP literal; never something an SSH client could read as an option.
HostName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:\[\]-]+$", max_length=253)]
Port = Annotated[int, Field(strict=True, ge=1, le=65535)]
UserName = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$", max_length=64)
]

_HH_MM = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")
# A file name part we write on destinations: no separators, no leading dot or dash.
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$")


def path_problem(path: str) -> str | None:
    """Why `path` breaks the one rule for relative paths, or None when it keeps it.

    The rule, for config file names and `storage.path` alike: `/` separates folders, a backslash
    is refused (a separator on Windows and in some stores; the git store refuses it too), every
    character is printable text (no NUL, newline or other control or format character, no byte
    that is not UTF-8) and no component is `..`. Checked when the config set is validated, so a
    path that would fail later, on every run or every API request, is never applied.
    """
    if "\\" in path:
        return "contains a backslash (separate folders with '/')"
    if not path.isprintable():
        odd = next(char for char in path if not char.isprintable())
        if 0xDC80 <= ord(odd) <= 0xDCFF:  # how Python spells a byte that is not UTF-8
            return f"contains the byte 0x{ord(odd) - 0xDC00:02x}, which is not UTF-8"
        return f"contains the unprintable character U+{ord(odd):04X}"
    if ".." in path.split("/"):
        return "contains a '..' component"
    return None


class SourceType(StrEnum):
    FILES = "files"
    DATABASE = "database"


class Frequency(StrEnum):
    DAILY = "daily"
    WEEKLY = "weekly"


class Weekday(StrEnum):
    MONDAY = "monday"
    TUESDAY = "tuesday"
    WEDNESDAY = "wednesday"
    THURSDAY = "thursday"
    FRIDAY = "friday"
    SATURDAY = "saturday"
    SUNDAY = "sunday"

    @property
    def iso(self) -> int:
        """Monday = 0 ... Sunday = 6, as `datetime.weekday()` counts."""
        return list(Weekday).index(self)


class DatabaseEngine(StrEnum):
    MYSQL = "mysql"
    POSTGRESQL = "postgresql"


@cache
def _known_timezones() -> frozenset[str]:
    return frozenset(available_timezones())


def check_timezone(name: str) -> str:
    """An IANA zone name that this host's tz database knows ("UTC" always works)."""
    if name == "UTC":
        return name
    if name not in _known_timezones():
        raise ValueError(f"unknown IANA timezone {name!r} (for example 'Europe/Berlin' or 'UTC')")
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:  # pragma: no cover - defensive
        raise ValueError(f"unknown IANA timezone {name!r}") from exc
    return name


_DURATION = re.compile(
    r"^(?:(?P<y>[0-9]{1,4})y)?(?:(?P<m>[0-9]{1,5})m)?(?:(?P<w>[0-9]{1,5})w)?"
    r"(?:(?P<d>[0-9]{1,6})d)?(?:(?P<h>[0-9]{1,7})h)?$"
)


_EARLIEST = datetime.min.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Duration:
    """A span of calendar time, as restic's `--keep-within` takes it (`2d`, `1w3d`, `1y2m`)."""

    text: str
    years: int
    months: int
    weeks: int
    days: int
    hours: int

    def before(self, moment: datetime, zone: ZoneInfo) -> datetime:
        """`moment` minus this span: years, months, weeks and days on the calendar in `zone` (a
        month back from 31 March is the end of February), hours as elapsed time."""
        local = moment.astimezone(zone)
        year, month = divmod(local.year * 12 + local.month - 1 - self.years * 12 - self.months, 12)
        month += 1
        if year <= MINYEAR:
            return _EARLIEST
        day = min(local.day, monthrange(year, month)[1])
        try:
            wall = local.replace(tzinfo=None, year=year, month=month, day=day)
            wall -= timedelta(weeks=self.weeks, days=self.days)
            return wall.replace(tzinfo=zone).astimezone(UTC) - timedelta(hours=self.hours)
        except OverflowError:  # reaching back before year 1: nothing is older
            return _EARLIEST


def parse_duration(text: str) -> Duration:
    """`1y2m3w4d5h` (any of the parts, in that order): years, months, weeks, days, hours."""
    match = _DURATION.match(text)
    if match is None or not text:
        raise ValueError(
            f"a duration is numbers with units y, m, w, d, h in that order, like '2d', '1w3d' or "
            f"'1y2m', got {text[:40]!r}"
        )
    parts = [int(match[unit] or 0) for unit in "ymwdh"]
    if not any(parts):
        raise ValueError(f"a duration must be longer than zero, got {text!r}")
    return Duration(text, *parts)


def check_hh_mm(value: object) -> str:
    """HH:MM on a 24 hour clock, normalised to two digit hours.

    A number here means the YAML was read by a YAML 1.1 loader that turned `10:30` into 630, or
    someone wrote `10.30`: either way the intent is ambiguous, so we ask for quotes.
    """
    if isinstance(value, bool) or not isinstance(value, str):
        raise ValueError(
            f"time must be a quoted string in HH:MM form, got {value!r}; "
            'write it with quotes, for example time: "10:30"'
        )
    match = _HH_MM.match(value.strip())
    if match is None:
        raise ValueError(f"time must be HH:MM on a 24 hour clock (00:00 to 23:59), got {value!r}")
    return f"{int(match.group(1)):02d}:{match.group(2)}"


def check_cron(value: str) -> str:
    expression = " ".join(value.split())
    if len(expression.split(" ")) != 5:
        raise ValueError(
            f"custom_cron must have five fields (minute hour day month weekday), got {value!r}"
        )
    if not croniter.is_valid(expression):
        raise ValueError(f"custom_cron {value!r} is not a valid cron expression")
    return expression


_AGE_BEGIN = "-----BEGIN AGE ENCRYPTED FILE-----"
_AGE_END = "-----END AGE ENCRYPTED FILE-----"
_BASE64 = re.compile(r"^[A-Za-z0-9+/]*={0,2}$")
# The armor of a 64 KiB secret for a few dozen recipients; larger is not a secret.
MAX_AGE_ARMOR = 128 * 1024


def check_age_armor(value: str) -> str:
    """An armored age file, in canonical form (64-column lines, LF endings).

    Line breaks may have become spaces (a YAML flow scalar folds them) or CRLFs: the body is
    re-wrapped, which changes no byte of the file it encodes. Only the form is checked here;
    whether it decrypts is the daemon's to find out, with its identity.
    """
    if len(value) > MAX_AGE_ARMOR:
        raise ValueError(f"the age-encrypted secret is longer than {MAX_AGE_ARMOR:,} characters")
    text = value.strip()
    if not text.startswith(_AGE_BEGIN):
        raise ValueError(
            f"an age-encrypted secret must be an armored age file starting with {_AGE_BEGIN}"
            " (made by `reconciler secret encrypt` or `age -a`)"
        )
    if not text.endswith(_AGE_END):
        raise ValueError(f"the age-encrypted secret does not end with {_AGE_END} (cut short?)")
    body = "".join(text[len(_AGE_BEGIN) : -len(_AGE_END)].split())
    if not body or not _BASE64.match(body) or len(body) % 4:
        raise ValueError(
            "the age-encrypted secret's armor is not base64 between its BEGIN/END lines"
        )
    try:
        decoded = base64.b64decode(body, validate=True)
    except binascii.Error:
        raise ValueError("the age-encrypted secret's armor is not valid base64") from None
    if not decoded.startswith(b"age-encryption.org/v1\n"):
        raise ValueError("the armor does not hold an age file (no age-encryption.org/v1 header)")
    lines = [body[start : start + 64] for start in range(0, len(body), 64)]
    return "\n".join([_AGE_BEGIN, *lines, _AGE_END, ""])


AgeArmor = Annotated[str, AfterValidator(check_age_armor)]


class SecretRef(Model):
    """Where a secret lives on the backup host; the value itself never enters git in the clear.

    Exactly one of: `env` (an environment variable of the daemon), `file` (an absolute path on the
    backup host, first line is the secret), `secret` (a key in the daemon's own secrets store,
    written by the API) or `age` (the secret itself, age-encrypted to the daemon's identity).
    """

    env: Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")] | None = None
    file: str | None = None
    secret: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,128}$")] | None = None
    age: AgeArmor | None = Field(default=None, repr=False)

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretRef:
        kinds = ("env", "file", "secret", "age")
        given = [name for name in kinds if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(
                "a secret reference needs exactly one of env, file, secret or age "
                f"(got {', '.join(given) or 'none'}); secret values never go in the YAML"
                " unencrypted"
            )
        if self.file is not None and not self.file.startswith("/"):
            raise ValueError(f"secret file must be an absolute path, got {self.file!r}")
        return self


class User(Model):
    id: Id
    name: Label
    email: Annotated[str, StringConstraints(pattern=r"^[^@\s]+@[^@\s]+$", max_length=255)]
    timezone: str = "UTC"

    _timezone = field_validator("timezone")(check_timezone)


class DatabaseConnection(Model):
    """How to reach the database server from the remote host the dump runs on."""

    engine: DatabaseEngine | None = None  # None: detected on the remote at run time
    host: HostName | None = None  # None: the local socket on the remote
    port: Port | None = None
    username: UserName | None = None
    password: SecretRef | None = None


def check_key_path(value: str | None) -> str | None:
    """An SSH key or known_hosts file on the backup host: absolute, or under `~` (the home of
    the user the daemon runs as, expanded when it connects)."""
    if value is not None and not value.startswith(("/", "~")):
        raise ValueError(
            f"must be an absolute path on the backup host or start with ~, got {value!r}"
        )
    return value


class RemoteServer(Model):
    id: Id
    user_id: Id
    label: Label
    host: HostName
    port: Port = 22
    username: UserName = "root"
    private_key: str | None = None  # path on the backup host
    known_hosts: str | None = None  # path; None: ~/.ssh/known_hosts of the daemon's user
    accept_new_host_keys: bool = False
    database: DatabaseConnection | None = None
    # How many of its backups may run at once; more wait (scheduled) or are refused (manual).
    max_parallel_runs: Annotated[int, Field(strict=True, ge=1)] = 1

    _key_paths = field_validator("private_key", "known_hosts")(check_key_path)


def check_absolute_path(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError(f"must be an absolute path, got {value!r}")
    if "\x00" in value or "\n" in value:
        raise ValueError("must not contain NUL or newline characters")
    return value


class LocalDestination(Model):
    id: Id
    user_id: Id
    label: Label
    type: Literal["local"]
    path: str

    _path = field_validator("path")(check_absolute_path)


class SftpDestination(Model):
    id: Id
    user_id: Id
    label: Label
    type: Literal["sftp"]
    host: HostName
    port: Port = 22
    username: UserName = "root"
    private_key: str | None = None
    known_hosts: str | None = None
    accept_new_host_keys: bool = False
    path: str

    _path = field_validator("path")(check_absolute_path)
    _key_paths = field_validator("private_key", "known_hosts")(check_key_path)


class S3Destination(Model):
    id: Id
    user_id: Id
    label: Label
    type: Literal["s3"]
    bucket: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")]
    prefix: str = ""
    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: SecretRef | None = None
    secret_access_key: SecretRef | None = None


def check_repository(value: str) -> str:
    if not value.strip():
        raise ValueError("a restic repository must not be empty")
    if any(bad in value for bad in ("\n", "\r", "\x00")):
        raise ValueError("a restic repository must be a single line without NUL characters")
    return value


class ResticDestination(Model):
    """A restic repository (any string restic takes: a path, `sftp:`, `s3:`, `rest:`...);
    restic encrypts, compresses and deduplicates what is stored there."""

    id: Id
    user_id: Id
    label: Label
    type: Literal["restic"]
    repository: Annotated[str, StringConstraints(max_length=4096), AfterValidator(check_repository)]
    password: SecretRef
    access_key_id: SecretRef | None = None
    secret_access_key: SecretRef | None = None
    create: bool = True  # `restic init` on first use; false: a missing repository is an error
    # `null` turns the daemon's prunes off (someone prunes the repository another way).
    prune: ResticPrune | None = Field(default_factory=lambda: ResticPrune())


class ResticPrune(Model):
    """When the daemon runs `restic prune` on a restic destination: what `forget` left behind
    is removed then. Weekly, Sunday 04:00 UTC, unless the destination says otherwise."""

    schedule: Schedule = Field(
        default_factory=lambda: Schedule(
            frequency=Frequency.WEEKLY, time="04:00", weekday=Weekday.SUNDAY
        )
    )


BackupDestination = Annotated[
    LocalDestination | SftpDestination | S3Destination | ResticDestination,
    Field(discriminator="type"),
]


class NotificationType(StrEnum):
    EMAIL = "email"
    DISCORD = "discord"
    SLACK = "slack"
    TEAMS = "teams"
    PUSHOVER = "pushover"
    TELEGRAM = "telegram"
    WEBHOOK = "webhook"
    HEALTHCHECKS = "healthchecks"  # healthchecks.io and compatible: pinged, not sent a message
    UPTIME_KUMA = "uptime_kuma"  # an Uptime Kuma push monitor's URL


# Monitors watch for a ping per run (a missing one is how they notice a run that never happened),
# so they are sent every outcome unless the stream says otherwise.
MONITOR_TYPES = frozenset({NotificationType.HEALTHCHECKS, NotificationType.UPTIME_KUMA})


class NotificationEvent(StrEnum):
    FAILURE = "failure"
    RECOVERY = "recovery"  # the first success after one or more failures
    SUCCESS = "success"  # every success


def check_monitor_url(url: str) -> str:
    """A monitor is reached over HTTP(S) at a host; anything else is a typo or a hazard."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parsing the port is what raises on a bad one
    except ValueError as exc:
        raise ValueError(f"is not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"must be an http:// or https:// URL, got scheme {parts.scheme!r}")
    if not parts.hostname:
        raise ValueError("must name a host (http://host/...)")
    if _CONTROL.search(url) or " " in url:
        raise ValueError("must not contain spaces or control characters")
    return url


class NotificationStream(Model):
    """Where to tell people how runs went, and which runs to tell them about.

    apprise types take an apprise URL; `healthchecks` and `uptime_kuma` an http(s) URL. URLs that
    carry a token belong in a SecretRef. `events` chooses the outcomes sent; without it,
    `on_failure`/`on_success` do, as before (`wanted_events`).
    """

    id: Id
    user_id: Id
    label: Label
    type: NotificationType
    url: str | SecretRef
    on_success: bool = False
    on_failure: bool = True
    events: tuple[NotificationEvent, ...] | None = None
    repeat: bool = False  # every failure of a streak is sent, not only its first

    @field_validator("url")
    @classmethod
    def _monitor_url(cls, url: str | SecretRef, info: ValidationInfo) -> str | SecretRef:
        kind = info.data.get("type")
        if kind in MONITOR_TYPES and isinstance(url, str):
            try:
                check_monitor_url(url)
            except ValueError as exc:
                raise ValueError(f"the URL of a {kind} stream {exc}") from None
        return url

    @model_validator(mode="after")
    def _one_way_to_choose(self) -> NotificationStream:
        given = self.model_fields_set & {"on_success", "on_failure"}
        if self.events is not None and given:
            raise ValueError(
                f"give either events or {' and '.join(sorted(given))}, not both"
                " (events: [failure, recovery, success] says it all)"
            )
        return self

    def wanted_events(self) -> frozenset[NotificationEvent]:
        if self.events is not None:
            return frozenset(self.events)
        if self.type in MONITOR_TYPES and not self.model_fields_set & {"on_success", "on_failure"}:
            return frozenset({NotificationEvent.FAILURE, NotificationEvent.SUCCESS})
        wanted = set()
        if self.on_failure:
            wanted.add(NotificationEvent.FAILURE)
        if self.on_success:
            wanted.add(NotificationEvent.SUCCESS)
        return frozenset(wanted)


def split_table_list(value: Any) -> Any:
    """`excluded_tables` may be a YAML list or the API's comma-separated string."""
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


class Source(Model):
    type: SourceType
    path: str | None = None
    database_name: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = None
    excluded_tables: tuple[Annotated[str, StringConstraints(min_length=1, max_length=64)], ...] = ()

    _tables = field_validator("excluded_tables", mode="before")(split_table_list)

    @field_validator("path")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        return None if value is None else check_absolute_path(value)

    @model_validator(mode="after")
    def _complete(self) -> Source:
        if self.type is SourceType.FILES and self.path is None:
            raise ValueError("a files source needs a path")
        if self.type is SourceType.DATABASE and self.database_name is None:
            raise ValueError("a database source needs a database_name")
        return self


class Schedule(Model):
    frequency: Frequency | None = None
    time: str | None = None
    custom_cron: str | None = None
    timezone: str = "UTC"
    weekday: Weekday | None = None

    _time = field_validator("time", mode="before")(
        lambda value: None if value is None else check_hh_mm(value)
    )
    _cron = field_validator("custom_cron")(
        lambda value: None if value is None else check_cron(value)
    )
    _timezone = field_validator("timezone")(check_timezone)

    @model_validator(mode="after")
    def _complete(self) -> Schedule:
        if self.custom_cron is not None:
            if self.time is not None or self.weekday is not None:
                raise ValueError("give either custom_cron or time (with weekday), not both")
            return self
        if self.frequency is None or self.time is None:
            raise ValueError("a schedule needs frequency and time, or custom_cron")
        if self.frequency is Frequency.DAILY and self.weekday is not None:
            raise ValueError("weekday only applies to weekly schedules")
        return self

    @property
    def run_weekday(self) -> Weekday:
        """The day a weekly schedule runs on; Sunday when not given, as cron's `0`."""
        return self.weekday or Weekday.SUNDAY


class Compression(StrEnum):
    ZSTD = "zstd"
    NONE = "none"  # for data that is already compressed (media, archives): tar or dump as is


KeepCount = Annotated[int, Field(strict=True, ge=1, le=100_000)]


class Keep(Model):
    """Retention by the calendar, restic's `forget` rules: see the README's `storage.keep`."""

    last: KeepCount | None = None
    hourly: KeepCount | None = None
    daily: KeepCount | None = None
    weekly: KeepCount | None = None
    monthly: KeepCount | None = None
    yearly: KeepCount | None = None
    within: Annotated[str, StringConstraints(max_length=40)] | None = None

    @field_validator("within")
    @classmethod
    def _within(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value)
        return value

    @model_validator(mode="after")
    def _some_rule(self) -> Keep:
        if all(getattr(self, rule) is None for rule in type(self).model_fields):
            raise ValueError(
                "keep needs at least one of last, hourly, daily, weekly, monthly, yearly, within "
                "(to keep every backup, leave keep out and set max_backups: 0)"
            )
        return self


class Storage(Model):
    max_backups: Annotated[int, Field(strict=True, ge=0)] = 5
    keep: Keep | None = None
    appended_filename: str | None = None
    path: str = ""
    compression: Compression = Compression.ZSTD
    compression_level: Annotated[int, Field(strict=True, ge=1, le=19)] = 3

    @model_validator(mode="after")
    def _one_last(self) -> Storage:
        if self.keep is None or "max_backups" not in self.model_fields_set:
            return self
        if self.keep.last is not None:
            raise ValueError(
                "max_backups is keep.last (the newest N backups): give one of them, not both"
            )
        if self.max_backups == 0:
            raise ValueError(
                "max_backups: 0 keeps every backup, which contradicts keep: remove one of them"
            )
        return self

    @model_validator(mode="after")
    def _level_needs_zstd(self) -> Storage:
        if self.compression is Compression.NONE and "compression_level" in self.model_fields_set:
            raise ValueError("compression_level applies only to compression: zstd")
        return self

    @field_validator("appended_filename")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is not None and not _SAFE_NAME.match(value):
            raise ValueError(
                "appended_filename may only use letters, digits, '_', '.' and '-' "
                f"(and not start with '.' or '-'), got {value!r}"
            )
        return value

    @field_validator("path")
    @classmethod
    def _relative(cls, value: str) -> str:
        problem = path_problem(value)
        if problem is not None:
            raise ValueError(f"storage path {value[:100]!r} {problem}")
        return "/".join(part for part in value.split("/") if part not in ("", "."))


# A hook's text is a shell script, so it is kept exactly as written (no stripping); the bounds
# keep a typo (a pasted file, a runaway list) from becoming a remote command line.
MAX_HOOK_CHARS = 16_384
MAX_HOOKS = 20
DEFAULT_HOOK_TIMEOUT_SECONDS = 300
MAX_HOOK_TIMEOUT_SECONDS = 24 * 3600


def check_hook_text(value: str) -> str:
    if "\x00" in value:
        raise ValueError("a hook command must not contain a NUL character")
    if not value.strip():
        raise ValueError("a hook command must not be empty or only whitespace")
    return value


HookCommand = Annotated[
    str,
    StringConstraints(strip_whitespace=False, max_length=MAX_HOOK_CHARS),
    AfterValidator(check_hook_text),
]


class Hooks(Model):
    """Shell commands run on the task's server around a run: see the README's `hooks`."""

    before: Annotated[tuple[HookCommand, ...], Field(max_length=MAX_HOOKS)] = ()
    after: Annotated[tuple[HookCommand, ...], Field(max_length=MAX_HOOKS)] = ()
    timeout: Annotated[int, Field(strict=True, gt=0, le=MAX_HOOK_TIMEOUT_SECONDS)] = (
        DEFAULT_HOOK_TIMEOUT_SECONDS
    )


class Verify(Model):
    """Restore drills: `reconciler verify` of the task's newest backup on a schedule of its own;
    for a dump, `load_into` names a server entry whose database server a drill loads the dump
    into, in a scratch database it creates and drops."""

    schedule: Schedule
    load_into: Id | None = None


class BackupTask(Model):
    id: Id
    user_id: Id
    label: Label
    description: Annotated[str, StringConstraints(max_length=65535)] | None = None
    remote_server_id: Id
    backup_destination_id: Id
    source: Source
    schedule: Schedule
    storage: Storage = Storage()
    notification_stream_ids: tuple[Id, ...] = ()
    paused: bool = False
    encryption_password: SecretRef | None = None
    isolated_username: UserName | None = None
    isolated_password: SecretRef | None = None
    run_timeout_seconds: (
        Annotated[int, Field(strict=True, gt=0, le=MAX_RUN_TIMEOUT_SECONDS)] | None
    ) = None
    hooks: Hooks = Hooks()
    verify: Verify | None = None

    @model_validator(mode="after")
    def _isolated_pair(self) -> BackupTask:
        if (self.isolated_username is None) != (self.isolated_password is None):
            raise ValueError("isolated_username and isolated_password go together")
        return self


Destination = LocalDestination | SftpDestination | S3Destination | ResticDestination
Document = User | RemoteServer | Destination | NotificationStream | BackupTask


class ResolvedTask(Model):
    """A task with everything it points at, as one snapshot: what the scheduler runs.

    Keeping the referenced objects inside the snapshot is what lets a task keep running on its
    last good version when a file it depends on breaks.
    """

    task: BackupTask
    owner: User
    server: RemoteServer
    destination: Destination = Field(discriminator="type")
    notifications: tuple[NotificationStream, ...] = ()
    scratch_server: RemoteServer | None = None  # verify.load_into's server entry

    @property
    def id(self) -> int:
        return self.task.id


def secret_references(model: BaseModel) -> Iterator[tuple[tuple[str, ...], SecretRef]]:
    """Every secret reference a document holds, with its location (its keys)."""
    for name in _secret_fields(type(model)):
        value = getattr(model, name)
        if isinstance(value, SecretRef):
            yield (name,), value
        elif isinstance(value, BaseModel):
            for location, ref in secret_references(value):
                yield (name, *location), ref


@cache
def _secret_fields(model: type[BaseModel]) -> tuple[str, ...]:
    """The fields of `model` whose type can hold a SecretRef: the reconcile looks at those alone
    (walking every field of 10,000 tasks cost a tenth of a cold start's parse)."""
    return tuple(
        name for name, info in model.model_fields.items() if _may_hold_secret(info.annotation)
    )


def _may_hold_secret(annotation: object) -> bool:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation is SecretRef or bool(_secret_fields(annotation))
    return any(_may_hold_secret(part) for part in get_args(annotation))
