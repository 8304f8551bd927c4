"""The reconcile loop: the branch head's config set, made the running schedule.

One reconcile is: list the head commit's YAML files (path -> blob id), read and parse only the
blobs that changed since the last reconcile, rebuild the desired state (pure, cheap: unchanged
objects are reused), diff it against the scheduler (pure), and apply the difference. It is
level-triggered and idempotent: reconciling the same revision twice changes nothing, and the same
code path serves the first start, a new commit, an API write and the periodic resync.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from reconciler.desired import DesiredState, build_desired
from reconciler.documents import SYMLINK_REASON, ParsedFile, file_problem, is_ignored, refused
from reconciler.filetimes import FileTimesIndex
from reconciler.gitstore import GitStore, TreeEntry
from reconciler.headtrust import HeadTrust
from reconciler.loader import parse_files
from reconciler.models import ResolvedTask
from reconciler.plan import Plan, make_plan
from reconciler.scheduler import Scheduler
from reconciler.state import StateStore
from reconciler.types import Clock, ConfigError, RunKind

log = logging.getLogger("reconciler.engine")

# Parses handed in by `expect` and not yet used: a few writes' worth (a write that never commits
# leaves one behind).
_EXPECTED_FILES = 64


@dataclass(frozen=True, slots=True)
class _Snapshot:
    """Everything one reconcile computed off the event loop, ready to apply."""

    revision: str | None
    blobs: Mapping[str, TreeEntry]
    files: Mapping[str, ParsedFile]
    desired: DesiredState
    parsed: int


class Engine:
    def __init__(
        self,
        *,
        store: GitStore,
        scheduler: Scheduler,
        state: StateStore,
        clock: Clock,
        parse_workers: int | None = None,
        vet: Callable[[ParsedFile], ParsedFile] | None = None,
        trust: HeadTrust | None = None,
        drills: Scheduler | None = None,
    ) -> None:
        """`vet`: a check of each newly parsed file beyond the models (the secrets' decryption,
        `Secrets.vet`), which may turn it into a file with errors. `drills`, a scheduler of
        restore drills (`scheduler.drill_schedule`), is given every task the backup scheduler
        is given."""
        self.store = store
        # With it, only a head signed by an allowed key is applied (see reconciler.headtrust).
        self.trust = trust
        self._scheduler = scheduler
        self._schedulers = (scheduler,) if drills is None else (scheduler, drills)
        self._drills = drills
        self._schedule = state.schedule
        self._runs = state.runs
        self._clock = clock
        self._parse_workers = parse_workers
        self._vet = vet
        self._lock = asyncio.Lock()
        self._file_times = FileTimesIndex(store, state.file_times)
        self._blobs: Mapping[str, TreeEntry] = {}
        self._files: Mapping[str, ParsedFile] = {}
        self._desired = DesiredState()
        self._expected: dict[tuple[str, str], ParsedFile] = {}
        self._expected_lock = threading.Lock()
        self.revision: str | None = None
        self.reconciled_at: datetime | None = None
        self.last_duration: float | None = None
        self.reconciles = 0
        self.last_parsed = 0

    @property
    def desired(self) -> DesiredState:
        return self._desired

    @property
    def errors(self) -> tuple[ConfigError, ...]:
        return self._desired.errors

    def next_fire(self, task_id: int) -> datetime | None:
        return self._scheduler.next_fire(task_id)

    def file_times(self, paths: Sequence[str]) -> dict[str, tuple[datetime, datetime] | None]:
        """(created, last changed) of config files, from the file-time index. Blocking."""
        return self._file_times.times(paths)

    def expect(self, parsed: ParsedFile) -> None:
        """A file just committed, as its writer parsed it (with `documents.parse_file`): the
        reconcile that finds that path with exactly that content takes this parse instead of
        reading and parsing the file again."""
        with self._expected_lock:
            self._expected[(parsed.path, _blob_id(parsed.text))] = parsed
            while len(self._expected) > _EXPECTED_FILES:
                del self._expected[next(iter(self._expected))]

    def close(self) -> None:
        """Stop a file-time index rebuild in progress. Blocking."""
        self._file_times.close()

    async def sync(self, *, full: bool = False) -> Plan:
        """Reconcile the branch head now; returns once the scheduler runs it.

        `full` lists every file of the head commit instead of diffing from the applied one: the
        periodic resync's way of repairing anything an earlier reconcile could have missed.
        A head already applied (say, the ref watch's event for an API commit the writer has
        already reconciled) costs one read of the head and changes nothing: it is no reconcile.
        """
        async with self._lock:
            started = time.perf_counter()
            head = await asyncio.to_thread(self._head_to_apply, full)
            if not full and self.reconciled_at is not None and head == self.revision:
                return Plan()
            snapshot = await asyncio.to_thread(self._compute, head, full)
            # The scheduler runs what the engine last applied, so the tasks the new desired state
            # may have revised are the only ones that can differ.
            plan = make_plan(
                snapshot.desired.tasks, self._scheduler.tasks, snapshot.desired.revised
            )
            if plan.added:
                # A state store write, which can wait for SQLite's lock: never on the event loop.
                added = [task.id for task in plan.added]
                await asyncio.to_thread(self._schedule.mark_seen, added, self._clock.now())
            self._apply(snapshot, plan)
            # After the scheduler has the commit: the index is observed state, never on the way
            # from a commit to its schedule.
            await asyncio.to_thread(self._follow_file_times, snapshot.revision)
            self.last_duration = time.perf_counter() - started
            self.reconciles += 1
            self.last_parsed = snapshot.parsed
            if not plan.empty or snapshot.parsed:
                log.info(
                    "reconciled %s: %d tasks (+%d ~%d -%d), %d files parsed, %.0f ms",
                    (snapshot.revision or "empty repository")[:12],
                    len(snapshot.desired.tasks),
                    len(plan.added),
                    len(plan.changed),
                    len(plan.removed),
                    snapshot.parsed,
                    self.last_duration * 1000,
                )
            return plan

    def write_refusal(self) -> str | None:
        """Why an API write cannot be committed now (see `HeadTrust.write_refusal`), or None."""
        return None if self.trust is None else self.trust.write_refusal()

    def _head_to_apply(self, full: bool) -> str | None:
        """The branch head, or, when heads must be signed and this one is not, the revision
        that stays in force: a refused head never reaches the scheduler."""
        head = self.store.head()
        return head if self.trust is None else self.trust.admit(head, recheck=full)

    def catch_up(self, deadline: timedelta) -> list[tuple[ResolvedTask, datetime]]:
        """Slots missed while no daemon was up, at most one per task, within `deadline`.

        A task that never fired counts from when the daemon first scheduled it, so adding a task
        never makes it run at once.
        """
        now = self._clock.now()
        last = {**self._schedule.first_seen(), **self._schedule.last_fired()}
        alive = self._schedule.alive_since(now - deadline)
        return self._scheduler.catch_up(last, now, deadline, alive)

    def catch_up_drills(self, deadline: timedelta) -> list[tuple[ResolvedTask, datetime]]:
        """Restore drills missed while no daemon was up, at most one per task, within
        `deadline`, counted from each task's last drill (a task never drilled waits for its
        first slot)."""
        if self._drills is None:
            return []
        now = self._clock.now()
        last = self._runs.last_run_at(self._drills.tasks, RunKind.VERIFY)
        alive = self._schedule.alive_since(now - deadline)
        return self._drills.catch_up(last, now, deadline, alive)

    def _compute(self, head: str | None, full: bool) -> _Snapshot:
        updates = self._changed_blobs(head, full)
        blobs, files = dict(self._blobs), dict(self._files)
        for path, blob in updates.items():
            if blob is None:
                del blobs[path], files[path]
            else:
                blobs[path] = blob
        changed = {path: blob for path, blob in updates.items() if blob is not None}
        expected = self._take_expected(changed)
        unparsed = {path: blob for path, blob in changed.items() if path not in expected}
        fresh = {**expected, **parse_entries(self.store, unparsed, self._parse_workers)}
        vet = self._vet
        files.update(fresh if vet is None else {path: vet(file) for path, file in fresh.items()})
        # The periodic resync rebuilds everything: its way of repairing whatever was missed.
        desired = build_desired(files, self._desired, None if full else updates.keys())
        return _Snapshot(head, blobs, files, desired, len(updates) - len(expected))

    def _follow_file_times(self, head: str | None) -> None:
        """Per applied commit, so a task list never walks git history for its file times. It is
        observed state: failing to keep it (a busy state store) never holds back the config."""
        try:
            self._file_times.follow(head)
        except Exception:
            log.exception("the file-time index could not follow %s; lists walk git meanwhile", head)

    def _take_expected(self, changed: Mapping[str, TreeEntry]) -> dict[str, ParsedFile]:
        """The parses `expect` was given for these entries (each used once)."""
        with self._expected_lock:
            return {
                path: parsed
                for path, entry in changed.items()
                if not entry.symlink
                and (parsed := self._expected.pop((path, entry.blob), None)) is not None
            }

    def _changed_blobs(self, head: str | None, full: bool) -> dict[str, TreeEntry | None]:
        """Config paths whose entry differs from the applied one: the new entry, None if gone."""
        if head is None:
            return dict.fromkeys(self._blobs)
        if full or self.revision is None:
            listing = {p: b for p, b in self.store.list_entries(head).items() if not is_ignored(p)}
            gone = dict.fromkeys(path for path in self._blobs if path not in listing)
            return {p: b for p, b in listing.items() if self._blobs.get(p) != b} | gone
        # A tree diff from the applied commit: one edit costs the same with 10 or 10,000 files.
        changes = self.store.changed_files(self.revision, head).items()
        return {
            path: blob
            for path, blob in changes
            if not is_ignored(path)
            and self._blobs.get(path) != blob
            and (blob is not None or path in self._blobs)
        }

    def _apply(self, snapshot: _Snapshot, plan: Plan) -> None:
        now = self._clock.now()
        for scheduler in self._schedulers:
            for task in plan.removed:
                scheduler.remove(task.id)
            for task in plan.added:
                scheduler.upsert(task, now)
            for change in plan.changed:
                scheduler.upsert(change.task, now)
        for error in set(snapshot.desired.errors) - set(self._desired.errors):
            log.warning("config error: %s", error.render())
        self._blobs, self._files, self._desired = snapshot.blobs, snapshot.files, snapshot.desired
        self.revision = snapshot.revision
        self.reconciled_at = now


def parse_entries(
    store: GitStore, entries: Mapping[str, TreeEntry], workers: int | None = None
) -> dict[str, ParsedFile]:
    """Parse committed files. A symbolic link, a bad name or an oversized blob is refused unread:
    sizes come from the object headers, so no blob over the limit is ever loaded."""
    files: dict[str, ParsedFile] = {}
    sizes = store.blob_sizes(entry.blob for entry in entries.values() if not entry.symlink)
    readable: dict[str, str] = {}
    for path, entry in entries.items():
        problem = SYMLINK_REASON if entry.symlink else file_problem(path, sizes[entry.blob])
        if problem is None:
            readable[path] = entry.blob
        else:
            files[path] = refused(path, problem)
    if readable:
        contents = store.read_blobs(readable.values())
        files.update(
            parse_files({path: contents[blob] for path, blob in readable.items()}, workers)
        )
    return files


def _blob_id(content: bytes) -> str:
    """The id git gives a blob of `content` (SHA-1 object format)."""
    return hashlib.sha1(b"blob %d\x00" % len(content) + content, usedforsecurity=False).hexdigest()
