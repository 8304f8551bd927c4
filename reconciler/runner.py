"""Runs backups: SSH command -> (encryption) -> destination, then rotation, history, notifications.

Runs execute on a bounded thread pool (paramiko is blocking); `request_run` and `dispatch` only
record the run and queue it, so both are safe to call from the asyncio event loop. A task is
reserved from the moment it is queued until its run ends, which is what keeps it from ever running
twice at once.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path

from reconciler.commands import (
    DETECT_ENGINE_COMMAND,
    EXIT_PRODUCER_WARNING,
    BackupFormat,
    RemoteCommand,
    backup_format,
    choose_engine,
    make_backup_command,
)
from reconciler.destinations import BackupWriter, DestinationStore, open_destination
from reconciler.encryption import EncryptingWriter
from reconciler.executor import CONNECT_TIMEOUT, STALL_TIMEOUT, RemoteShell, SshTarget
from reconciler.history import History, RunInProgressError, RunRecord
from reconciler.models import DatabaseConnection, DatabaseEngine, ResolvedTask, SourceType
from reconciler.notify import RunOutcome, send_notifications
from reconciler.retention import backup_name, backups_to_delete
from reconciler.secrets import Secrets
from reconciler.types import Clock, RunStatus
from reconciler.verifier import StreamVerifier

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = timedelta(hours=6)
LOG_TAIL_LINES = 20
PROGRESS_EVERY = timedelta(seconds=30)


class RunRequest(StrEnum):
    ACCEPTED = "accepted"
    PAUSED = "paused"
    ALREADY_RUNNING = "already_running"
    SERVER_BUSY = "server_busy"

    @property
    def message(self) -> str:
        return _MESSAGES[self]


_MESSAGES = {
    RunRequest.ACCEPTED: "the run was queued",
    RunRequest.PAUSED: "the task is paused; resume it to run it",
    RunRequest.ALREADY_RUNNING: "the task is already running",
    RunRequest.SERVER_BUSY: "another task is running on the same remote server",
}


class RunFailed(Exception):
    """A run failed for a reason worth showing as is."""


@dataclass(frozen=True, slots=True)
class _Reservation:
    task_id: int
    server_id: int
    run_id: int


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
    ) -> None:
        self._writer = writer
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
            self._log(
                f"streamed {self.size / 1e6:,.1f} MB so far "
                f"({self.size / 1e6 / seconds:,.1f} MB/s over {seconds:,.0f} s)"
            )


class Runner:
    def __init__(
        self,
        *,
        history: History,
        secrets: Secrets,
        clock: Clock,
        max_workers: int = 4,
        default_timeout: timedelta = DEFAULT_TIMEOUT,
        known_hosts: Path | None = None,
        connect_timeout: float = CONNECT_TIMEOUT,
        stall_timeout: float = STALL_TIMEOUT,
        progress_every: timedelta = PROGRESS_EVERY,
    ) -> None:
        if max_workers < 1:
            raise ValueError(f"max_workers must be at least 1, got {max_workers}")
        if progress_every <= timedelta(0):
            raise ValueError(f"progress_every must be positive, got {progress_every}")
        self._history = history
        self._secrets = secrets
        self._clock = clock
        self._default_timeout = default_timeout
        self._known_hosts = known_hosts
        self._connect_timeout = connect_timeout
        self._stall_timeout = stall_timeout
        self._progress_every = progress_every
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="backup")
        self._lock = threading.Lock()
        self._reserved: dict[int, _Reservation] = {}
        self._futures: dict[int, Future[None]] = {}
        self._stop = threading.Event()

    # Queueing

    def request_run(self, task: ResolvedTask, trigger: str = "manual") -> RunRequest:
        """Queue a manual run, unless the task is paused or it or its server is busy."""
        with self._lock:
            if task.task.paused:
                return RunRequest.PAUSED
            if task.id in self._reserved:
                return RunRequest.ALREADY_RUNNING
            if any(r.server_id == task.server.id for r in self._reserved.values()):
                return RunRequest.SERVER_BUSY
            if not self._queue(task, trigger):
                return RunRequest.ALREADY_RUNNING
        return RunRequest.ACCEPTED

    def dispatch(self, task: ResolvedTask, slot: datetime) -> None:
        """Queue a scheduled run for `slot`; skipped (and logged) while the task still runs."""
        with self._lock:
            if task.task.paused:
                logger.info("task %d is paused: scheduled run at %s skipped", task.id, slot)
                return
            if task.id in self._reserved:
                logger.warning(
                    "task %d is still running: scheduled run at %s skipped", task.id, slot
                )
                return
            if not self._queue(task, "schedule"):
                logger.warning(
                    "task %d is running in another process: scheduled run at %s skipped",
                    task.id,
                    slot,
                )

    def _queue(self, task: ResolvedTask, trigger: str) -> bool:
        """Start a run in the pool; False if another process is running the task."""
        if self._stop.is_set():
            raise RuntimeError("the runner is closed")
        try:
            run_id = self._history.start_run(task.id, trigger, self._clock.now())
        except RunInProgressError:
            return False
        self._reserved[task.id] = _Reservation(task.id, task.server.id, run_id)
        self._futures[task.id] = self._pool.submit(self._run, task, run_id)
        return True

    def is_running(self, task_id: int) -> bool:
        with self._lock:
            return task_id in self._reserved

    def wait(self, task_id: int, timeout: float | None = None) -> None:
        """Block until the task's current run (if any) has finished."""
        with self._lock:
            future = self._futures.get(task_id)
        if future is not None:
            future.result(timeout=timeout)

    # Start and stop

    def recover(self, tasks: Iterable[ResolvedTask] = ()) -> list[RunRecord]:
        """Mark runs a crash left `running` as failed and remove their partial files.

        Call once at start, before any run is queued; `tasks` are the known tasks, whose
        destinations are cleaned of temporary files.
        """
        interrupted = self._history.recover_interrupted(self._clock.now())
        by_id = {task.id: task for task in tasks}
        for record in interrupted:
            task = by_id.get(record.task_id)
            if task is None:
                continue
            try:
                store = open_destination(task.destination, self._secrets.resolve)
                try:
                    removed = store.remove_partials(task.task.storage.path)
                finally:
                    store.close()
            except Exception as exc:
                logger.warning("task %d: cannot remove partial backups: %s", task.id, exc)
                continue
            for name in removed:
                logger.info("task %d: removed the partial backup %s", task.id, name)
        return interrupted

    async def close(self) -> None:
        """Stop queued runs, cancel running ones (their partial files are removed), and wait."""
        self._stop.set()
        await asyncio.to_thread(self._pool.shutdown, wait=True, cancel_futures=True)
        with self._lock:
            leftover = list(self._reserved.values())
            self._reserved.clear()
        for reservation in leftover:  # queued but never started
            self._history.finish_run(
                reservation.run_id,
                RunStatus.FAILED,
                self._clock.now(),
                reason="cancelled: the daemon stopped before the run started",
            )

    # One run

    def _run(self, task: ResolvedTask, run_id: int) -> None:
        started = self._clock.now()
        tail: deque[str] = deque(maxlen=LOG_TAIL_LINES)

        def log(line: str) -> None:
            tail.append(line)
            self._history.append_log(run_id, line, self._clock.now())

        status, reason, size, name = RunStatus.FAILED, "", None, None
        try:
            size, name = self._backup(task, started, log)
            status = RunStatus.SUCCESSFUL
        except Exception as exc:
            reason = str(exc) or type(exc).__name__
            log(f"failed: {reason}")
        finally:
            finished = self._clock.now()
            self._history.finish_run(
                run_id,
                status,
                finished,
                reason=reason or None,
                size=size,
                backup_name=name,
            )
            with self._lock:
                self._reserved.pop(task.id, None)
        self._notify(task, run_id, status, size, finished - started, reason, tail)

    def _notify(
        self,
        task: ResolvedTask,
        run_id: int,
        status: RunStatus,
        size: int | None,
        duration: timedelta,
        reason: str,
        tail: deque[str],
    ) -> None:
        if not task.notifications:
            return
        outcome = RunOutcome(
            task_id=task.id,
            task_label=task.task.label,
            successful=status is RunStatus.SUCCESSFUL,
            size=size,
            duration=duration,
            reason=reason or None,
            log_tail=tuple(tail),
        )
        for problem in send_notifications(task.notifications, outcome, self._secrets.resolve):
            self._history.append_log(run_id, f"notification failed: {problem}", self._clock.now())

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
        command = make_backup_command(source, task.task.storage, connection, engine)
        stdin = b""
        if command.reads_password and connection is not None and connection.password is not None:
            password = self._secrets.resolve(connection.password)
            if "\n" in password or "\r" in password:
                raise RunFailed("the database password must be a single line")
            stdin = password.encode() + b"\n"
        return command, stdin

    def _backup(
        self, task: ResolvedTask, started: datetime, log: Callable[[str], None]
    ) -> tuple[int, str]:
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
        store: DestinationStore = open_destination(task.destination, self._secrets.resolve)
        try:
            with RemoteShell(
                target, connect_timeout=self._connect_timeout, stall_timeout=self._stall_timeout
            ) as shell:
                command, stdin = self._command(task, shell)
                form = backup_format(spec.source, spec.storage, encrypted=passphrase is not None)
                name = backup_name(spec.id, spec.storage.appended_filename, started, form.extension)
                where = f"{spec.storage.path or '.'}/{name}"
                log(f"streaming {spec.source.type.value} to {task.destination.label}: {where}")
                size = self._stream(
                    shell, command, stdin, store, name, task, passphrase, form, timeout, log
                )
            log(f"stored {name} ({size} bytes)")
            try:
                self._rotate(task, store, name, log)
            except Exception as exc:  # the backup is stored; old ones stay until the next run
                log(f"rotation failed: {exc}")
        finally:
            store.close()
        return size, name

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
        log: Callable[[str], None],
    ) -> int:
        inner = store.open_writer(task.task.storage.path, name)
        encrypting = EncryptingWriter(inner, passphrase) if passphrase is not None else None
        writer: BackupWriter = encrypting if encrypting is not None else inner
        sink = _CountingSink(
            writer, clock=self._clock, progress_every=self._progress_every, log=log
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
                    cancel=self._stop,
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
        return encrypting.size if encrypting is not None else sink.size

    def _rotate(
        self, task: ResolvedTask, store: DestinationStore, keep: str, log: Callable[[str], None]
    ) -> None:
        storage = task.task.storage
        if storage.max_backups == 0:
            return
        names = [backup.name for backup in store.list_backups(storage.path)]
        for old in backups_to_delete(
            names, task.id, storage.appended_filename, storage.max_backups, keep
        ):
            store.delete(storage.path, old)
            log(f"rotation: deleted {old} (keeping {storage.max_backups})")
