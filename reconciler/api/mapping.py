"""From an API request body to edits of a task file, and from the file's errors back to fields.

The API speaks Vanguard's request names (`time_to_run_at`, `maximum_backups_to_keep`); the file
speaks the models' (`schedule.time`, `storage.max_backups`). Rules where they differ:

- `time_to_run_at` is UTC. Setting it to a new time writes `schedule.time` and, if the file had
  another `timezone`, sets `timezone: UTC` (the file then says exactly what the client asked; a
  converted local time would drift by an hour at every DST change). `custom_cron_expression` is
  UTC as well. Sending back the time a GET showed changes nothing.
- `excluded_database_tables` (comma-separated) becomes the list `source.excluded_tables`.
- `encryption_password` / `isolated_password` never reach the file: the caller stores them and
  passes the secrets-store key, and the file records `{secret: key}`.
- `null` (or an empty string) clears an optional field; it is an error for a required one.
- `frequency: daily` drops a `weekday`; a weekly task without one runs on Sunday.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, time
from typing import Final
from zoneinfo import ZoneInfo

from reconciler.api.errors import Invalid
from reconciler.api.schemas import TaskFields
from reconciler.models import BackupTask, Frequency, Schedule, SourceType
from reconciler.taskfile import DELETE, Path

FIELD_PATHS: Final[Mapping[str, Path]] = {
    "remote_server_id": ("remote_server_id",),
    "backup_destination_id": ("backup_destination_id",),
    "label": ("label",),
    "description": ("description",),
    "source_path": ("source", "path"),
    "type": ("source", "type"),
    "database_name": ("source", "database_name"),
    "excluded_database_tables": ("source", "excluded_tables"),
    "frequency": ("schedule", "frequency"),
    "time_to_run_at": ("schedule", "time"),
    "custom_cron_expression": ("schedule", "custom_cron"),
    "maximum_backups_to_keep": ("storage", "max_backups"),
    "appended_file_name": ("storage", "appended_filename"),
    "store_path": ("storage", "path"),
    "encryption_password": ("encryption_password",),
    "isolated_username": ("isolated_username",),
    "isolated_password": ("isolated_password",),
    "notification_stream_ids": ("notification_stream_ids",),
}
SECRET_FIELDS: Final = ("encryption_password", "isolated_password")
_NOT_NULL: Final = ("remote_server_id", "backup_destination_id", "label", "type")
_SCHEDULE_FIELDS: Final = ("frequency", "time_to_run_at", "custom_cron_expression")
_SIMPLE: Final = tuple(
    name for name in FIELD_PATHS if name not in (*_SCHEDULE_FIELDS, *SECRET_FIELDS)
)
# File locations that are not one request field, and the field that best explains them.
_YAML_TO_REQUEST: Final[Mapping[str, str]] = {
    **{".".join(path): name for name, path in FIELD_PATHS.items()},
    "encryption_password.secret": "encryption_password",
    "isolated_password.secret": "isolated_password",
    "schedule": "time_to_run_at",
    "schedule.weekday": "frequency",
    "schedule.timezone": "time_to_run_at",
    "source": "type",
    "storage": "maximum_backups_to_keep",
}


def human(field: str) -> str:
    return field.replace("_", " ")


def request_field(yaml_field: str) -> str:
    """The request field a task file error is about (`schedule.time` -> `time_to_run_at`)."""
    if yaml_field in _YAML_TO_REQUEST:
        return _YAML_TO_REQUEST[yaml_field]
    head = yaml_field.partition(".")[0]
    if head == "notification_stream_ids":
        return yaml_field
    return _YAML_TO_REQUEST.get(head, yaml_field or "body")


def scheduled_times(
    schedule: Schedule, owner_timezone: str, now: datetime
) -> tuple[str, str] | None:
    """(HH:MM in UTC, HH:MM in the owner's timezone) of today's run; None for a cron schedule."""
    if schedule.time is None:
        return None
    zone = ZoneInfo(schedule.timezone)
    hour, minute = (int(part) for part in schedule.time.split(":"))
    at = datetime.combine(now.astimezone(zone).date(), time(hour, minute), tzinfo=zone)
    return at.astimezone(UTC).strftime("%H:%M"), at.astimezone(ZoneInfo(owner_timezone)).strftime(
        "%H:%M"
    )


def task_edits(
    body: TaskFields,
    given: set[str],
    current: BackupTask | None,
    now: datetime,
    secret_keys: Mapping[str, str],
) -> dict[Path, object]:
    """The file edits that make `current` (None: a new task) what the request asks.

    `given` names the fields the client sent; `secret_keys` maps each secret field sent with a
    value to the secrets-store key it was stored under. Raises Invalid naming request fields.
    """
    errors: dict[str, list[str]] = {}
    edits: dict[Path, object] = {}
    for name in _NOT_NULL:
        if name in given and getattr(body, name) is None:
            errors.setdefault(name, []).append(f"The {human(name)} field must not be null.")
    for name in _SIMPLE:
        if name in given:
            edits[FIELD_PATHS[name]] = _file_value(name, getattr(body, name))
    for name in SECRET_FIELDS:
        if name in given:
            key = secret_keys.get(name)
            edits[FIELD_PATHS[name]] = DELETE if key is None else {"secret": key}
    _check_completeness(body, given, current, errors)
    edits.update(_schedule_edits(body, given, current, now, errors))
    if errors:
        raise Invalid(errors)
    return edits


def _file_value(name: str, value: object) -> object:
    if value is None or value == "" or value == []:
        return DELETE
    if name == "excluded_database_tables":
        assert isinstance(value, str)
        tables = [part.strip() for part in value.split(",") if part.strip()]
        return tables or DELETE
    if name == "store_path":
        assert isinstance(value, str)
        return value.strip("/") or DELETE
    if name == "type":
        assert isinstance(value, SourceType)
        return value.value
    if name == "notification_stream_ids":
        assert isinstance(value, list)
        return list(dict.fromkeys(value))
    return value


def _effective(body: TaskFields, given: set[str], name: str, current_value: object) -> object:
    return getattr(body, name) if name in given else current_value


def _check_completeness(
    body: TaskFields,
    given: set[str],
    current: BackupTask | None,
    errors: dict[str, list[str]],
) -> None:
    """Requirements that span fields, checked on the merged result so each names its field."""
    source = current.source if current is not None else None
    kind = _effective(body, given, "type", source.type if source else None)
    path = _effective(body, given, "source_path", source.path if source else None)
    database = _effective(body, given, "database_name", source.database_name if source else None)
    if kind is SourceType.FILES and not path:
        errors.setdefault("source_path", []).append(
            "The source path field is required when type is files."
        )
    if kind is SourceType.DATABASE and not database:
        errors.setdefault("database_name", []).append(
            "The database name field is required when type is database."
        )
    username = _effective(
        body, given, "isolated_username", current.isolated_username if current else None
    )
    has_password = (
        body.isolated_password is not None
        if "isolated_password" in given
        else current is not None and current.isolated_password is not None
    )
    if bool(username) != has_password:
        missing = "isolated_password" if username else "isolated_username"
        other = "isolated username" if username else "isolated password"
        errors.setdefault(missing, []).append(
            f"The {human(missing)} field is required when {other} is present."
        )


def _schedule_edits(
    body: TaskFields,
    given: set[str],
    current: BackupTask | None,
    now: datetime,
    errors: dict[str, list[str]],
) -> dict[Path, object]:
    schedule = current.schedule if current is not None else None
    current_cron = schedule.custom_cron if schedule else None
    current_times = scheduled_times(schedule, "UTC", now) if schedule else None
    current_time = current_times[0] if current_times else None
    new_time = body.time_to_run_at if "time_to_run_at" in given else None
    new_cron = body.custom_cron_expression if "custom_cron_expression" in given else None
    if new_time is not None and new_cron is not None:
        errors.setdefault("time_to_run_at", []).append(
            "Give either time_to_run_at or custom_cron_expression, not both."
        )
        return {}
    cron = new_cron if new_cron is not None else None
    if cron is None and new_time is None:
        cleared_time = "time_to_run_at" in given
        cleared_cron = "custom_cron_expression" in given
        cron = None if cleared_cron else current_cron
        at = None if cleared_time else current_time
        if cron is None and at is None:
            errors.setdefault("time_to_run_at", []).append(
                "The time to run at field is required when custom cron expression is not present."
            )
            return {}
    else:
        at = new_time

    edits: dict[Path, object] = {}
    moved_to_utc = schedule is not None and schedule.timezone != "UTC"
    frequency = _effective(body, given, "frequency", schedule.frequency if schedule else None)
    if cron is not None:
        if cron != current_cron:
            edits[("schedule", "custom_cron")] = cron
            edits[("schedule", "time")] = DELETE
            edits[("schedule", "weekday")] = DELETE
            if moved_to_utc:
                edits[("schedule", "timezone")] = "UTC"
            if "frequency" not in given:
                frequency = None
        if frequency != (schedule.frequency if schedule else None):
            edits[("schedule", "frequency")] = DELETE if frequency is None else str(frequency)
        return edits

    if frequency is None:
        errors.setdefault("frequency", []).append(
            "The frequency field is required when time to run at is present."
        )
        return {}
    assert isinstance(frequency, Frequency)
    assert at is not None
    if at != current_time:
        edits[("schedule", "time")] = at
        edits[("schedule", "custom_cron")] = DELETE
        if moved_to_utc:
            edits[("schedule", "timezone")] = "UTC"
    if schedule is None or frequency is not schedule.frequency:
        edits[("schedule", "frequency")] = frequency.value
        if frequency is Frequency.DAILY:
            edits[("schedule", "weekday")] = DELETE
    return edits
