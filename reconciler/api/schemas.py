"""Request and response bodies of the backup-task API, named as the contract names them.

Requests ignore unknown fields (as the Laravel application the contract comes from does), so a
client that sends extra fields keeps working; every known field is validated.
"""

from __future__ import annotations

from typing import Annotated, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from reconciler.models import (
    Frequency,
    Label,
    SourceType,
    check_absolute_path,
    check_cron,
    check_hh_mm,
)

ApiId = Annotated[int, Field(strict=True, gt=0, le=2**53)]
Secret = Annotated[str, StringConstraints(min_length=1, max_length=1024)]


class TaskFields(BaseModel):
    """Every field a create or update may carry; an update changes only the fields it sends."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    remote_server_id: ApiId | None = None
    backup_destination_id: ApiId | None = None
    label: Label | None = None
    description: Annotated[str, StringConstraints(max_length=65535)] | None = None
    source_path: Annotated[str, StringConstraints(max_length=4096)] | None = None
    type: SourceType | None = None
    database_name: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = None
    excluded_database_tables: Annotated[str, StringConstraints(max_length=65535)] | None = None
    frequency: Frequency | None = None
    time_to_run_at: str | None = Field(default=None, description="HH:MM, in UTC")
    custom_cron_expression: str | None = Field(
        default=None, description="five-field cron expression, in UTC"
    )
    maximum_backups_to_keep: Annotated[int, Field(strict=True, ge=0, le=10_000)] | None = None
    appended_file_name: Annotated[str, StringConstraints(max_length=100)] | None = None
    store_path: Annotated[str, StringConstraints(max_length=4096)] | None = None
    encryption_password: Secret | None = None
    isolated_username: Annotated[str, StringConstraints(max_length=64)] | None = None
    isolated_password: Secret | None = None
    notification_stream_ids: list[ApiId] | None = Field(default=None, max_length=100)

    @field_validator("source_path")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        return None if value is None else check_absolute_path(value)

    @field_validator("time_to_run_at")
    @classmethod
    def _time(cls, value: str | None) -> str | None:
        return None if value is None else check_hh_mm(value)

    @field_validator("custom_cron_expression")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        return None if value is None or value == "" else check_cron(value)


class TaskCreate(TaskFields):
    remote_server_id: ApiId
    backup_destination_id: ApiId
    label: Label
    type: SourceType


class Source(BaseModel):
    path: str | None
    type: SourceType
    database_name: str | None
    excluded_tables: str | None = Field(description="comma-separated table names")


class Schedule(BaseModel):
    frequency: Frequency | None
    scheduled_utc_time: str | None = Field(description="HH:MM in UTC (today's date)")
    scheduled_local_time: str | None = Field(description="HH:MM in the owner's timezone")
    custom_cron: str | None


class Storage(BaseModel):
    max_backups: int
    appended_filename: str | None
    path: str | None


class Task(BaseModel):
    id: int
    user_id: int
    remote_server_id: int
    backup_destination_id: int
    label: str
    description: str | None
    source: Source
    schedule: Schedule
    storage: Storage
    notification_streams_count: int
    status: str
    has_isolated_credentials: bool
    has_encryption_password: bool
    last_run_local_time: str | None = Field(description="YYYY-MM-DD HH:MM:SS, owner's timezone")
    last_run_utc_time: str | None
    paused_at: str | None
    created_at: str | None
    updated_at: str | None


T = TypeVar("T")


class Links(BaseModel):
    first: str
    last: str
    prev: str | None
    next: str | None


class Meta(BaseModel):
    current_page: int
    from_: int | None = Field(serialization_alias="from")
    last_page: int
    path: str
    per_page: int
    to: int | None
    total: int


class Page(BaseModel, Generic[T]):
    data: list[T]
    links: Links
    meta: Meta


class One(BaseModel, Generic[T]):
    data: T


# Each body the API answers with is a named subclass, so the OpenAPI schema (and a client
# generated from it) says `TaskPage`, not pydantic's `Page_Task_`.


class TaskPage(Page[Task]):
    """A page of the caller's backup tasks."""


class TaskResponse(One[Task]):
    """One backup task."""


class TaskStatusData(BaseModel):
    id: int
    status: str


class TaskStatusResponse(One[TaskStatusData]):
    """Whether a backup task is running now."""


class ResticSnapshot(BaseModel):
    snapshot_id: str = Field(
        description="the snapshot's id as restic's summary gives it: the short id from restic"
        " 0.14, the full id from 0.15 on"
    )
    data_added: int = Field(description="bytes the snapshot added to the repository")
    total_bytes_processed: int = Field(description="bytes restic read for the snapshot")


class Log(BaseModel):
    id: int
    backup_task_id: int
    output: str
    finished_at: str | None
    status: str
    created_at: str
    kind: str = Field(
        description="`backup`, or `verify` for a restore drill of the task's newest backup"
    )
    size: int | None = Field(
        description="bytes stored by a backup run (or read by a drill); null when none"
    )
    sha256: str | None = Field(
        description="SHA-256 (hex) of the file a backup run stored; null for other runs"
    )
    restic: ResticSnapshot | None = Field(
        description="restic's summary of the snapshot a backup run stored in a restic"
        " repository; null for other runs and destinations"
    )


class LogResponse(One[Log]):
    """One run of a backup task and the tail of its log."""


class LogPage(Page[Log]):
    """A page of a backup task's runs, newest first."""


class TaskCommit(BaseModel):
    commit: str = Field(description="the commit's full id")
    author_name: str
    author_email: str
    committed_at: str = Field(description="when it was committed, in UTC")
    message: str = Field(description="the whole commit message")
    change: Literal["created", "updated", "renamed", "deleted"] = Field(
        description="renamed: the task's file was renamed or moved (its fields may have changed"
        " too)"
    )
    fields: list[str] = Field(
        description="the task's fields the commit changed, as the YAML names them"
        " (`schedule.time`); every field for created and deleted; empty when the file did not"
        " read as YAML on either side, or only comments or formatting changed"
    )


class TaskHistoryPage(Page[TaskCommit]):
    """A page of the commits that changed a backup task, newest first."""


class Upcoming(BaseModel):
    id: int
    label: str
    next_run_utc_time: str
    next_run_local_time: str = Field(description="YYYY-MM-DD HH:MM:SS, owner's timezone")


class UpcomingList(One[list[Upcoming]]):
    """The caller's next scheduled runs, soonest first."""


class ErrorLocation(BaseModel):
    path: str
    line: int | None
    field: str
    message: str


class SignatureState(BaseModel):
    """Whether heads must be signed (`--allowed-signers`), the last verified revision (the one
    running) and its signer, and the head refused now with the reason (null when none is)."""

    required: bool
    verified_revision: str | None
    signed_by: str | None
    refused_revision: str | None
    reason: str | None


class KeptCommits(BaseModel):
    """Unpushed API commits that no longer applied to the remote's branch, kept on `ref`."""

    ref: str
    commits: list[str]
    upstream: str
    reason: str


class RemoteState(BaseModel):
    """The remote the daemon follows (`serve --remote`); its URL without credentials."""

    url: str
    branch: str
    last_fetch_at: str | None
    last_success_at: str | None
    last_error: str | None
    set_aside: list[KeptCommits]


class NodeState(BaseModel):
    """One daemon sharing the state store: the revision it applied and when it was last seen."""

    id: str
    revision: str | None
    revision_time: str | None  # the applied commit's time: what "behind" compares
    last_seen: str


class SyncData(BaseModel):
    revision: str | None
    reconciled_at: str | None
    tasks: int
    errors: list[ErrorLocation]
    signature: SignatureState
    remote: RemoteState | None = None
    nodes: list[NodeState] = []


class SyncResponse(One[SyncData]):
    """The applied revision and the config set's errors."""


class Message(BaseModel):
    message: str


class Error(BaseModel):
    error: str
    message: str


class Invalid(BaseModel):
    message: str
    errors: dict[str, list[str]]
