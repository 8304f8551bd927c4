"""Resources as the contract shows them, built from the applied state and the run history."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from json.encoder import encode_basestring
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel

from reconciler.api import schemas
from reconciler.api.mapping import scheduled_times
from reconciler.headtrust import HeadTrust
from reconciler.models import BackupTask, User
from reconciler.state.runs import RunRecord
from reconciler.taskhistory import HistoryEntry
from reconciler.types import TaskStatus
from reconciler.upstream import Upstream


def utc_text(moment: datetime) -> str:
    """`2024-08-07T01:00:00Z`."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def local_text(moment: datetime, timezone: str) -> str:
    """`2024-08-06 21:00:00` in `timezone`."""
    return moment.astimezone(ZoneInfo(timezone)).strftime("%Y-%m-%d %H:%M:%S")


def _newest_kept(task: BackupTask) -> int:
    """`maximum_backups_to_keep` as the task keeps it: `keep.last` is the same setting."""
    keep = task.storage.keep
    return keep.last if keep is not None and keep.last is not None else task.storage.max_backups


def task(
    task: BackupTask,
    owner: User,
    *,
    status: TaskStatus,
    last_run: datetime | None,
    file_times: tuple[datetime, datetime] | None,
    now: datetime,
) -> schemas.Task:
    """The v2 task resource.

    `paused_at` is the time of the last commit to a paused task's file: git records when the file
    last changed, not which change paused it, so this is the latest moment the pause can date from.
    """
    times = scheduled_times(task.schedule, owner.timezone, now)
    created, updated = file_times if file_times is not None else (None, None)
    return schemas.Task(
        id=task.id,
        user_id=task.user_id,
        remote_server_id=task.remote_server_id,
        backup_destination_id=task.backup_destination_id,
        label=task.label,
        description=task.description,
        source=schemas.Source(
            path=task.source.path,
            type=task.source.type,
            database_name=task.source.database_name,
            excluded_tables=",".join(task.source.excluded_tables) or None,
        ),
        schedule=schemas.Schedule(
            frequency=task.schedule.frequency,
            scheduled_utc_time=times[0] if times else None,
            scheduled_local_time=times[1] if times else None,
            custom_cron=task.schedule.custom_cron,
        ),
        storage=schemas.Storage(
            max_backups=_newest_kept(task),
            appended_filename=task.storage.appended_filename,
            path=f"/{task.storage.path}" if task.storage.path else None,
        ),
        notification_streams_count=len(task.notification_stream_ids),
        status=status.value,
        has_isolated_credentials=task.isolated_username is not None,
        has_encryption_password=task.encryption_password is not None,
        last_run_local_time=local_text(last_run, owner.timezone) if last_run else None,
        last_run_utc_time=utc_text(last_run) if last_run else None,
        paused_at=utc_text(updated) if task.paused and updated is not None else None,
        created_at=utc_text(created) if created is not None else None,
        updated_at=utc_text(updated) if updated is not None else None,
    )


# As the API's JSON responses write it (Starlette's JSONResponse); one encoder, because
# json.dumps with options builds a new one per call, and a page encodes dozens of values.
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))

# The task resource's fields that come from the run history, not from the applied revision.
RUN_STATE_FIELDS = ("status", "last_run_local_time", "last_run_utc_time")


@dataclass(frozen=True, slots=True)
class TaskTemplate:
    """A task resource as JSON text with its run state left out: `texts` around the values of
    `fields` (RUN_STATE_FIELDS in the resource's order), so a read only fills those in."""

    texts: tuple[str, ...]
    fields: tuple[str, ...]

    def render(self, status: TaskStatus, last_run: datetime | None, timezone: str) -> str:
        """The resource as JSON, with its run state; `timezone`: its owner's."""
        values = {
            "status": _json_string(status.value),
            "last_run_local_time": _json_string(
                local_text(last_run, timezone) if last_run else None
            ),
            "last_run_utc_time": _json_string(utc_text(last_run) if last_run else None),
        }
        parts = [self.texts[0]]
        for name, text in zip(self.fields, self.texts[1:], strict=True):
            parts += (values[name], text)
        return "".join(parts)


def task_template(resource: schemas.Task) -> TaskTemplate:
    """The resource (see `task`) as a template for its run state."""
    texts, fields, current = [], [], ["{"]
    dumped = resource.model_dump(mode="json", by_alias=True)
    for index, (key, value) in enumerate(dumped.items()):
        current.append(f"{',' if index else ''}{_json(key)}:")
        if key in RUN_STATE_FIELDS:
            texts.append("".join(current))
            fields.append(key)
            current = []
        else:
            current.append(_json(value))
    texts.append("".join([*current, "}"]))
    return TaskTemplate(tuple(texts), tuple(fields))


def json_object(members: Mapping[str, str]) -> str:
    """A JSON object of members whose values are JSON text already."""
    return "{" + ",".join(f"{_json(key)}:{value}" for key, value in members.items()) + "}"


def json_array(items: Iterable[str]) -> str:
    """A JSON array of items that are JSON text already."""
    return "[" + ",".join(items) + "]"


def json_model(model: BaseModel) -> str:
    """A response model as the API writes it (by its fields' aliases)."""
    return _json(model.model_dump(mode="json", by_alias=True))


def _json(value: object) -> str:
    return _ENCODER.encode(value)


def _json_string(value: str | None) -> str:
    # What _ENCODER writes for these, without its generic dispatch: a page renders dozens.
    return "null" if value is None else encode_basestring(value)


def log(run: RunRecord) -> schemas.Log:
    return schemas.Log(
        id=run.id,
        backup_task_id=run.task_id,
        output=run.output,
        finished_at=utc_text(run.finished_at) if run.finished_at else None,
        status=run.status.value,
        created_at=utc_text(run.started_at),
        kind=run.kind.value,
        size=run.size,
        sha256=run.sha256,
        restic=None
        if run.snapshot is None
        else schemas.ResticSnapshot(
            snapshot_id=run.snapshot.snapshot_id,
            data_added=run.snapshot.data_added,
            total_bytes_processed=run.snapshot.total_bytes_processed,
        ),
    )


def history_entry(entry: HistoryEntry) -> schemas.TaskCommit:
    commit = entry.commit
    return schemas.TaskCommit(
        commit=commit.sha,
        author_name=commit.author.name,
        author_email=commit.author.email,
        committed_at=utc_text(commit.time),
        message=commit.message,
        change=entry.change.value,
        fields=list(entry.fields),
    )


def pagination(
    path: str, page: int, per_page: int, total: int, shown: int, default_per_page: int
) -> dict[str, Any]:
    """The `links` and `meta` of a page of `shown` items out of `total`."""
    last_page = max(1, math.ceil(total / per_page))
    suffix = "" if per_page == default_per_page else f"&per_page={per_page}"

    def url(number: int) -> str:
        return f"{path}?page={number}{suffix}"

    first_item = (page - 1) * per_page + 1
    return {
        "links": schemas.Links(
            first=url(1),
            last=url(last_page),
            prev=url(page - 1) if 1 < page <= last_page + 1 else None,
            next=url(page + 1) if page < last_page else None,
        ),
        "meta": schemas.Meta(
            current_page=page,
            from_=first_item if shown else None,
            last_page=last_page,
            path=path,
            per_page=per_page,
            to=first_item + shown - 1 if shown else None,
            total=total,
        ),
    }


def signature_state(trust: HeadTrust | None) -> schemas.SignatureState:
    """The `signature` object of `GET /api/sync`."""
    if trust is None:
        return schemas.SignatureState(
            required=False,
            verified_revision=None,
            signed_by=None,
            refused_revision=None,
            reason=None,
        )
    state = trust.state
    return schemas.SignatureState(
        required=True,
        verified_revision=state.verified_revision,
        signed_by=state.signed_by,
        refused_revision=state.refused_revision,
        reason=state.reason,
    )


def remote(upstream: Upstream | None) -> schemas.RemoteState | None:
    """`/api/sync`'s `remote`: null when the daemon follows no remote."""
    if upstream is None:
        return None
    status = upstream.status
    return schemas.RemoteState(
        url=status.url,
        branch=status.branch,
        last_fetch_at=utc_text(status.last_fetch_at) if status.last_fetch_at else None,
        last_success_at=utc_text(status.last_success_at) if status.last_success_at else None,
        last_error=status.last_error,
        set_aside=[
            schemas.KeptCommits(
                ref=kept.ref, commits=list(kept.commits), upstream=kept.upstream, reason=kept.reason
            )
            for kept in status.set_aside
        ],
    )
