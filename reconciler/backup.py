"""One backup run, start to end: the SSH command, its stream (encrypted when the task says so)
into the destination, rotation, the run's record and log, notifications, the run history's pruning.

Which runs start, when, and on which thread is `reconciler.runner`'s (admission); a run reaches
this pipeline already recorded as running. Its own log lines go to the state store in batches
(`RunLog`).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path

from pydantic import TypeAdapter

from reconciler.checksum import HashingWriter
from reconciler.commands import (
    DETECT_ENGINE_COMMAND,
    EXIT_PRODUCER_WARNING,
    BackupFormat,
    RemoteCommand,
    backup_format,
    choose_engine,
    make_backup_command,
    stored_storage,
)
from reconciler.destinations import BackupWriter, DestinationStore, open_destination
from reconciler.destinations.restic import ResticWriter
from reconciler.encryption import EncryptingWriter
from reconciler.executor import CONNECT_TIMEOUT, STALL_TIMEOUT, RemoteShell, SshTarget
from reconciler.models import (
    BackupDestination,
    DatabaseConnection,
    DatabaseEngine,
    ResolvedTask,
    SourceType,
)
from reconciler.notify import RunOutcome, send_notifications, send_run_started
from reconciler.prune import apply_retention
from reconciler.repolocks import RepositoryLocks
from reconciler.resticcommands import BackupSummary
from reconciler.retention import backup_name
from reconciler.runhooks import (
    HookStage,
    Outcome,
    hook_environment,
    run_after_hooks,
    run_before_hooks,
)
from reconciler.runtally import RunTally
from reconciler.secrets import Secrets
from reconciler.state.runs import RunRecord, Runs, RunTarget
from reconciler.streaks import failures_before
from reconciler.types import Clock, RunKind, RunStatus
from reconciler.verifier import StreamVerifier

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = timedelta(hours=6)
LOG_TAIL_LINES = 20
PROGRESS_EVERY = timedelta(seconds=30)
DEFAULT_KEEP_RUNS = 200
DEFAULT_KEEP_RUN_AGE = timedelta(days=90)
# A run's log lines reach the state store when this many are waiting, or this long after the first
# of them: a reader sees a running backup's log within about a second.
LOG_BATCH_LINES = 500
LOG_BATCH_CHARS = 256 << 10
LOG_FLUSH_SECONDS = 0.5
MAX_RUN_LOG_LINES = 100_000
# How far back a failure streak is counted (the history is pruned to 200 runs by default).
STREAK_LOOKBACK_RUNS = 10_000
INTERRUPTED_BY_STOP = "interrupted: the daemon stopped before the backup finished"


class RunFailed(Exception):
    """A run failed for a reason worth showing as is."""


_DESTINATION: TypeAdapter[BackupDestination] = TypeAdapter(BackupDestination)


@dataclass(frozen=True, slots=True)
class RunResult:
    """How a run ended, as recorded."""

    status: RunStatus
    duration: timedelta
    size: int | None
    reason: str | None


class RunLog:
    """One run's log lines, written to the state store in batches: when `LOG_BATCH_LINES` lines or
    `LOG_BATCH_CHARS` characters wait, `LOG_FLUSH_SECONDS` after the first waiting line (a short
    timer), and on `flush`. Callable from any thread.

    A run stores at most `max_lines` lines as they come; past that only the last
    `LOG_TAIL_LINES` are kept, and `flush(final=True)` stores them after a line saying how many
    were left out, so a runaway remote cannot grow the state store without bound and the end of the
    run (its failure, say) is still there.
    """

    def __init__(self, runs: Runs, run_id: int, clock: Clock, max_lines: int) -> None:
        self._runs = runs
        self._run_id = run_id
        self._clock = clock
        self._max_lines = max_lines
        self._pending: list[tuple[datetime, str]] = []
        self._chars = 0
        self._accepted = 0
        self._overflow: deque[tuple[datetime, str]] = deque(maxlen=LOG_TAIL_LINES)
        self._dropped = 0
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()  # guards the fields above
        self._writing = threading.Lock()  # one batch at a time, so batches stay in order

    def __call__(self, line: str) -> None:
        with self._lock:
            entry = (self._clock.now(), line)
            if self._accepted >= self._max_lines:
                if len(self._overflow) == self._overflow.maxlen:
                    self._dropped += 1
                self._overflow.append(entry)
                return
            self._accepted += 1
            self._pending.append(entry)
            self._chars += len(line)
            full = len(self._pending) >= LOG_BATCH_LINES or self._chars >= LOG_BATCH_CHARS
            if not full and self._timer is None:
                self._timer = threading.Timer(LOG_FLUSH_SECONDS, self._flush_on_time)
                self._timer.daemon = True
                self._timer.start()
        if full:
            self.flush()

    def flush(self, *, final: bool = False) -> None:
        with self._writing:
            with self._lock:
                batch, self._pending, self._chars = self._pending, [], 0
                if self._timer is not None:
                    self._timer.cancel()
                    self._timer = None
                if final and self._overflow:
                    if self._dropped:
                        note = (
                            f"[{self._dropped:,} log lines not stored: a run stores its first"
                            f" {self._max_lines:,} lines and its last {LOG_TAIL_LINES}]"
                        )
                        batch.append((self._overflow[0][0], note))
                    batch.extend(self._overflow)
                    self._overflow.clear()
                    self._dropped = 0
            self._runs.append_logs(self._run_id, batch)

    def _flush_on_time(self) -> None:
        try:
            self.flush()
        except Exception:  # the next flush tries again with these lines lost; the run goes on
            logger.exception("run %d: cannot store its log lines", self._run_id)


class _CountingSink:
    """Counts the bytes that flow to the writer, and logs how far the stream has come every
    `progress_every`, so a long run shows progress in its log (`latest-log`)."""

    def __init__(
        self,
        writer: BackupWriter,
        *,
        clock: Clock,
        progress_every: timedelta,
        log: Callable[[str], None],
        detail: Callable[[], str | None] | None = None,
    ) -> None:
        """`detail` adds the store's own view to each progress line (restic's status)."""
        self._writer = writer
        self._detail = detail
        self._clock = clock
        self._every = progress_every
        self._log = log
        self._started = clock.now()
        self._next_progress = self._started + progress_every
        self.size = 0

    def __call__(self, chunk: bytes) -> None:
        self.size += len(chunk)
        self._writer.write(chunk)
        now = self._clock.now()
        if now >= self._next_progress:
            self._next_progress = now + self._every
            seconds = (now - self._started).total_seconds()
            line = (
                f"streamed {self.size / 1e6:,.1f} MB so far "
                f"({self.size / 1e6 / seconds:,.1f} MB/s over {seconds:,.0f} s)"
            )
            said = None if self._detail is None else self._detail()
            self._log(line if said is None else f"{line}; {said}")


def notify_outcome(
    runs: Runs,
    secrets: Secrets,
    task: ResolvedTask,
    run_id: int,
    outcome: RunOutcome,
    log: Callable[[str], None],
) -> None:
    """Send the task's streams how run `run_id` ended, with the failure streak before it among
    runs of the same kind (a failed drill does not make the next backup a recovery)."""
    if not task.notifications:
        return
    kind = RunKind.VERIFY if outcome.drill else RunKind.BACKUP
    try:
        previous = runs.statuses_before(task.id, run_id, STREAK_LOOKBACK_RUNS, kind)
    except Exception as exc:  # without the history, every outcome is news
        log(f"notifications: cannot read the run history, so no failure streak is known: {exc}")
        previous = []
    streaked = replace(outcome, failed_before=failures_before(previous))
    for problem in send_notifications(task.notifications, streaked, secrets.resolve):
        log(f"notification failed: {problem}")


class BackupPipeline:
    def __init__(
        self,
        *,
        runs: Runs,
        secrets: Secrets,
        clock: Clock,
        default_timeout: timedelta = DEFAULT_TIMEOUT,
        known_hosts: Path | None = None,
        connect_timeout: float = CONNECT_TIMEOUT,
        stall_timeout: float = STALL_TIMEOUT,
        progress_every: timedelta = PROGRESS_EVERY,
        keep_runs: int = DEFAULT_KEEP_RUNS,
        keep_run_age: timedelta | None = DEFAULT_KEEP_RUN_AGE,
        max_log_lines: int = MAX_RUN_LOG_LINES,
        tally: RunTally | None = None,
        repository_locks: RepositoryLocks | None = None,
    ) -> None:
        """`keep_runs` (0: no limit) and `keep_run_age` (None: no limit) bound the run history:
        after each run, runs beyond its task's newest `keep_runs` and runs older than
        `keep_run_age` are deleted with their logs. One run stores at most `max_log_lines` log
        lines as they come, and its last few (see `RunLog`). `tally`, if given, counts every
        run that ends (the metrics' counters). `repository_locks` keep its restic backups apart
        from the daemon's prunes of the same repository."""
        if progress_every <= timedelta(0):
            raise ValueError(f"progress_every must be positive, got {progress_every}")
        if keep_runs < 0 or (keep_run_age is not None and keep_run_age <= timedelta(0)):
            raise ValueError(f"cannot keep {keep_runs} runs for {keep_run_age}")
        if max_log_lines < 1:
            raise ValueError(f"max_log_lines must be at least 1, got {max_log_lines}")
        self._max_log_lines = max_log_lines
        self._keep_runs = keep_runs
        self._keep_run_age = keep_run_age
        self._runs = runs
        self._secrets = secrets
        self._clock = clock
        self._default_timeout = default_timeout
        self._known_hosts = known_hosts
        self._connect_timeout = connect_timeout
        self._stall_timeout = stall_timeout
        self._progress_every = progress_every
        self._tally = tally
        self._repository_locks = repository_locks

    def run(
        self,
        task: ResolvedTask,
        run_id: int,
        started: datetime,
        cancel: threading.Event,
        recorded: Callable[[RunResult], None],
    ) -> None:
        """Back the task up as run `run_id` (recorded running since `started`), record its end
        and tell `recorded`, then notify and prune the history. Setting `cancel` stops the
        stream (the run fails as `INTERRUPTED_BY_STOP`, its partial file removed)."""
        tail: deque[str] = deque(maxlen=LOG_TAIL_LINES)
        run_log = RunLog(self._runs, run_id, self._clock, self._max_log_lines)

        def log(line: str) -> None:
            tail.append(line)
            run_log(line)

        for problem in send_run_started(task.notifications, self._secrets.resolve):
            log(f"notification failed: {problem}")
        status, reason, size, name, sha256, snapshot = RunStatus.FAILED, "", None, None, None, None
        try:
            size, name, sha256, snapshot = self._backup(task, run_id, started, cancel, log)
            status = RunStatus.SUCCESSFUL
        except Exception as exc:
            # The runner cancels only when the daemon stops.
            reason = INTERRUPTED_BY_STOP if cancel.is_set() else str(exc) or type(exc).__name__
            log(f"failed: {reason}")
        finally:
            run_log.flush(final=True)  # before the run is seen finished: its log is complete
            finished = self._clock.now()
            self._runs.finish_run(
                run_id,
                status,
                finished,
                reason=reason or None,
                size=size,
                backup_name=name,
                sha256=sha256,
                snapshot=snapshot,
            )
        recorded(RunResult(status, finished - started, size, reason or None))
        if self._tally is not None:
            self._tally.record(task.id, status, finished - started, size)
        self._notify(task, run_id, run_log, status, size, finished - started, reason, tail)
        run_log.flush(final=True)
        self._prune(task.id, finished)

    def discard_partial(self, record: RunRecord) -> None:
        """Remove the temporary file an interrupted run left where it recorded it was writing
        (so a task deleted or moved since is cleaned up too); a failure is logged."""
        target = record.target
        if target is None:  # it stopped before it wrote anything
            return
        try:
            destination = _DESTINATION.validate_json(target.destination)
            store = open_destination(
                destination, self._secrets.resolve, known_hosts=self._known_hosts
            )
            try:
                removed = store.remove_partial(target.directory, target.name)
            finally:
                store.close()
        except Exception as exc:
            logger.warning(
                "task %d run %d: cannot remove the partial backup of %s: %s",
                record.task_id,
                record.id,
                target.name,
                exc,
            )
            return
        if removed:
            where = f"{target.directory or '.'}/{target.name}"
            logger.info(
                "task %d run %d: removed the partial backup %s", record.task_id, record.id, where
            )
            self._runs.append_logs(
                record.id, [(self._clock.now(), f"removed the partial backup of {where}")]
            )

    def _prune(self, task_id: int, now: datetime) -> None:
        before = now - self._keep_run_age if self._keep_run_age is not None else None
        deleted = self._runs.prune_runs(task_id, self._keep_runs, before)
        if deleted:
            logger.info("run history: deleted %d old run(s) and their logs", deleted)

    def _notify(
        self,
        task: ResolvedTask,
        run_id: int,
        log: Callable[[str], None],
        status: RunStatus,
        size: int | None,
        duration: timedelta,
        reason: str,
        tail: deque[str],
    ) -> None:
        outcome = RunOutcome(
            task_id=task.id,
            task_label=task.task.label,
            successful=status is RunStatus.SUCCESSFUL,
            size=size,
            duration=duration,
            reason=reason or None,
            log_tail=tuple(tail),
        )
        notify_outcome(self._runs, self._secrets, task, run_id, outcome, log)

    def _target(self, task: ResolvedTask) -> SshTarget:
        password = None
        if task.task.isolated_password is not None:
            password = self._secrets.resolve(task.task.isolated_password)
        return SshTarget.for_server(
            task.server,
            isolated_username=task.task.isolated_username,
            isolated_password=password,
            known_hosts=self._known_hosts,
        )

    def _command(self, task: ResolvedTask, shell: RemoteShell) -> tuple[RemoteCommand, bytes]:
        source, connection = task.task.source, task.server.database
        engine: DatabaseEngine | None = None
        if source.type is SourceType.DATABASE:
            if connection is not None and connection.engine is not None:
                engine = connection.engine
            else:
                _, found = shell.run(DETECT_ENGINE_COMMAND, timeout=self._connect_timeout)
                engine = choose_engine(connection or DatabaseConnection(), found)
        storage = stored_storage(task.task.storage, task.destination)
        command = make_backup_command(source, storage, connection, engine)
        stdin = b""
        if command.reads_password and connection is not None and connection.password is not None:
            password = self._secrets.resolve(connection.password)
            if "\n" in password or "\r" in password:
                raise RunFailed("the database password must be a single line")
            stdin = password.encode() + b"\n"
        return command, stdin

    def _backup(
        self,
        task: ResolvedTask,
        run_id: int,
        started: datetime,
        cancel: threading.Event,
        log: Callable[[str], None],
    ) -> tuple[int, str, str, BackupSummary | None]:
        """Take and store the backup; returns its size, name, SHA-256 and, on a restic
        destination, restic's summary of its snapshot."""
        spec = task.task
        timeout = (
            timedelta(seconds=spec.run_timeout_seconds)
            if spec.run_timeout_seconds is not None
            else self._default_timeout
        )
        passphrase = (
            self._secrets.resolve(spec.encryption_password)
            if spec.encryption_password is not None
            else None
        )
        target = self._target(task)
        log(f"connecting to {target.username}@{target.host}:{target.port}")
        store: DestinationStore = open_destination(
            task.destination,
            self._secrets.resolve,
            known_hosts=self._known_hosts,
            repository_locks=self._repository_locks,
            timezone=spec.schedule.timezone,
        )
        try:
            with RemoteShell(
                target, connect_timeout=self._connect_timeout, stall_timeout=self._stall_timeout
            ) as shell:
                outcome = Outcome.FAILURE
                try:
                    failure = run_before_hooks(
                        shell,
                        spec.hooks.before,
                        hook_environment(HookStage.BEFORE, spec.id, run_id),
                        timeout=spec.hooks.timeout,
                        log=log,
                        cancel=cancel,
                    )
                    if failure is not None:
                        raise RunFailed(f"{failure}, so no backup was taken")
                    command, stdin = self._command(task, shell)
                    form = backup_format(
                        spec.source,
                        stored_storage(spec.storage, task.destination),
                        encrypted=passphrase is not None,
                    )
                    name = backup_name(
                        spec.id, spec.storage.appended_filename, started, form.extension
                    )
                    where = f"{spec.storage.path or '.'}/{name}"
                    log(f"streaming {spec.source.type.value} to {task.destination.label}: {where}")
                    written = RunTarget(task.destination.model_dump_json(), spec.storage.path, name)
                    self._runs.record_target(run_id, written)
                    size, sha256, snapshot = self._stream(
                        shell, command, stdin, store, name, task, passphrase, form, timeout,
                        cancel, log,
                    )  # fmt: skip
                    log(f"stored {name} ({size} bytes, sha256 {sha256})")
                    outcome = Outcome.SUCCESS
                finally:
                    for problem in run_after_hooks(
                        shell,
                        spec.hooks.after,
                        hook_environment(HookStage.AFTER, spec.id, run_id, outcome),
                        timeout=spec.hooks.timeout,
                        log=log,
                    ):
                        log(f"warning: {problem}")
            try:
                self._rotate(task, store, name, log)
            except Exception as exc:  # the backup is stored; old ones stay until the next run
                log(f"rotation failed: {exc}")
        finally:
            store.close()
        return size, name, sha256, snapshot

    def _stream(
        self,
        shell: RemoteShell,
        command: RemoteCommand,
        stdin: bytes,
        store: DestinationStore,
        name: str,
        task: ResolvedTask,
        passphrase: str | None,
        form: BackupFormat,
        timeout: timedelta,
        cancel: threading.Event,
        log: Callable[[str], None],
    ) -> tuple[int, str, BackupSummary | None]:
        """Stream the backup into the destination; returns the stored object's size and SHA-256,
        hashed as it is written, and restic's summary when the destination is restic."""
        stored = store.open_writer(task.task.storage.path, name)
        inner = HashingWriter(stored)
        encrypting = EncryptingWriter(inner, passphrase) if passphrase is not None else None
        writer: BackupWriter = encrypting if encrypting is not None else inner
        detail = None
        if isinstance(stored, ResticWriter):
            stored.on_error = log
            detail = stored.progress
        sink = _CountingSink(
            writer, clock=self._clock, progress_every=self._progress_every, log=log, detail=detail
        )
        try:
            with StreamVerifier(form) as verifier:

                def store_and_verify(chunk: bytes) -> None:
                    sink(chunk)
                    verifier.feed(chunk)

                result = shell.stream(
                    command.command,
                    store_and_verify,
                    stdin=stdin,
                    timeout=timeout.total_seconds(),
                    on_stderr_line=lambda line: log(f"remote: {line}"),
                    cancel=cancel,
                )
                if result.exit_status == EXIT_PRODUCER_WARNING and command.producer_warning:
                    log(f"warning: {command.producer_warning}")
                elif result.exit_status != 0:
                    last = result.stderr_tail[-1] if result.stderr_tail else "no error output"
                    raise RunFailed(f"the remote command exited with {result.exit_status}: {last}")
                # An exit status is not proof: only a stream that reached its end is stored.
                problem = verifier.finish()
                if problem is not None:
                    raise RunFailed(f"the backup is incomplete, so it was not stored: {problem}")
        except BaseException:
            writer.abort()
            raise
        writer.commit()
        summary = stored.summary if isinstance(stored, ResticWriter) else None
        if summary is not None:
            log(
                f"restic snapshot {summary.snapshot_id}: {summary.total_bytes_processed} bytes "
                f"processed, {summary.data_added} bytes added to the repository"
            )
        return inner.size, inner.sha256(), summary

    def _rotate(
        self, task: ResolvedTask, store: DestinationStore, keep: str, log: Callable[[str], None]
    ) -> None:
        # Rotation does not wait for the repository's other backups, which may take hours: when
        # it is busy, the next run forgets what this one would have.
        apply_retention(
            task,
            store,
            apply=True,
            log=lambda line: log(f"rotation: {line}"),
            protect=(keep,),
            wait=False,
        )
