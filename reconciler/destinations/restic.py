"""A restic repository as a destination store: each backup is a snapshot of one file.

`open_writer` pipes the stream into `restic backup --stdin` (tagged `task:<id>`), so restic's
chunking deduplicates it against earlier runs; `list_backups` is `restic snapshots`, `open_reader`
is `restic dump` and `delete` is `restic forget` (its data goes with the destination's
`restic prune`). So the runner, rotation, restore and verify work on restic as on any store.

A locked repository is retried a few times with a growing pause; restic's own lock keeps other
processes out, the daemon's per-repository lock keeps its own runs and prunes apart.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import replace
from datetime import datetime
from typing import BinaryIO
from zoneinfo import ZoneInfo

from reconciler.destinations import DestinationError, StoredBackup, check_name, directory_parts
from reconciler.models import ResticDestination, SecretRef
from reconciler.processes import PIPE, Completed, Process, ProcessError, run
from reconciler.repolocks import RepositoryLocks
from reconciler.resticcommands import (
    MINIMUM_VERSION,
    BackupSummary,
    ResticProblem,
    SnapshotEntry,
    backup_argv,
    check_argv,
    classify,
    describe_message,
    dump_argv,
    forget_argv,
    forget_policy_argv,
    init_argv,
    parse_backup_line,
    parse_forget,
    parse_snapshots,
    parse_version,
    prune_argv,
    restic_environment,
    snapshots_argv,
    stdin_path,
    task_tag,
    unlock_argv,
    version_argv,
)
from reconciler.retention import Decision, Policy, parse_backup_name

COMMAND_TIMEOUT_SECONDS = 3600.0
LOCK_ATTEMPTS = 4
LOCK_FIRST_PAUSE_SECONDS = 2.0


class ResticError(DestinationError):
    def __init__(self, message: str, problem: ResticProblem) -> None:
        super().__init__(message)
        self.problem = problem


def check_restic_version(env: Mapping[str, str] | None = None) -> str:
    """The installed restic's version line; a DestinationError naming the version needed."""
    needed = ".".join(str(part) for part in MINIMUM_VERSION)
    try:
        done = run(version_argv(), timeout=30, env=env)
    except ProcessError as exc:
        raise DestinationError(f"restic {needed} or later is needed: {exc}") from exc
    version = parse_version(done.stdout)
    if version is None or version < MINIMUM_VERSION:
        found = done.stdout.decode(errors="replace").strip() or "no version"
        raise DestinationError(f"restic {needed} or later is needed, found {found!r}")
    return done.stdout.decode().strip()


class ResticWriter:
    """A running `restic backup --stdin`; `commit` ends its input and waits for its summary."""

    def __init__(self, store: ResticStore, directory: str, name: str) -> None:
        parsed = parse_backup_name(name)
        tags: tuple[str, ...] = ()
        taken_at = None
        if parsed is not None:
            # The run's own time, as its name has it (not restic's clock), so restic's calendar
            # and every other destination's see the same backup on the same day. In a DST
            # fall-back hour Go reads the wall time with the standard offset (an hour late for
            # the first of the two), so rotation protects the backup just written by name.
            tags, taken_at = (task_tag(parsed.task_id),), parsed.taken_at.astimezone(store.zone)
        self._store = store
        self._held = ExitStack()  # the repository's shared lock, from start to commit or abort
        self._held.enter_context(store.shared())
        try:
            argv = backup_argv(directory, name, tags, taken_at)
            self._process = Process(argv, env=store.env)
        except BaseException:
            self._held.close()
            raise
        self._summary: BackupSummary | None = None
        self._status: dict[str, object] | None = None
        # Where errors restic reports and goes on past are told (the run log), if anywhere.
        self.on_error: Callable[[str], None] | None = None
        self._done = False
        self._reader = threading.Thread(target=self._read_json, name="restic-json", daemon=True)
        self._reader.start()
        self.summary: BackupSummary | None = None

    def _read_json(self) -> None:
        fd = self._process.stdout_fd
        assert fd is not None
        with os.fdopen(os.dup(fd), "rb") as lines:
            for line in lines:
                message = parse_backup_line(line)
                if isinstance(message, BackupSummary):
                    self._summary = message
                elif message is not None and message.get("message_type") == "error":
                    said = describe_message(message)
                    if said is not None and self.on_error is not None:
                        self.on_error(said)
                elif message is not None:
                    self._status = message

    def progress(self) -> str | None:
        """restic's own view of the stream so far (its latest status), for the run log."""
        status = self._status
        return None if status is None else describe_message(status)

    def write(self, chunk: bytes) -> None:
        try:
            self._process.write(chunk)
        except BrokenPipeError:  # restic stopped reading: its exit says why
            self._done = True
            try:
                returncode = self._process.wait(COMMAND_TIMEOUT_SECONDS)
                stderr = self._process.stderr
            finally:
                self._process.close()
                self._held.close()
            raise self._store.failure("backup", returncode, stderr) from None

    def commit(self) -> None:
        if self._done:
            return
        self._done = True
        try:
            self._process.close_stdin()
            returncode = self._process.wait(COMMAND_TIMEOUT_SECONDS)
            self._reader.join()
            stderr = self._process.stderr
        finally:
            self._process.close()
            self._held.close()
        if returncode != 0:
            raise self._store.failure("backup", returncode, stderr)
        if self._summary is None:
            raise DestinationError("restic backup ended without its summary line")
        self.summary = self._summary

    def abort(self) -> None:
        if not self._done:
            self._done = True
            self._process.close()  # killed before it wrote a snapshot: nothing is stored
            self._held.close()


class ResticStore:
    def __init__(
        self,
        destination: ResticDestination,
        resolve_secret: Callable[[SecretRef], str],
        *,
        locks: RepositoryLocks | None = None,
        timezone: str | None = None,
        lock_attempts: int = LOCK_ATTEMPTS,
        lock_first_pause: float = LOCK_FIRST_PAUSE_SECONDS,
        on_retry: Callable[[str], None] | None = None,
    ) -> None:
        """`locks` are the daemon's (a store of its own otherwise); `timezone` is the one
        snapshot times are written in (the task's, so `forget` buckets them on its calendar)."""
        self._destination = destination
        self.env = restic_environment(destination, resolve_secret, os.environ)
        self.zone = ZoneInfo(timezone or "UTC")
        self.env["TZ"] = self.zone.key
        self._locks = RepositoryLocks() if locks is None else locks
        self._lock_attempts = lock_attempts
        self._lock_first_pause = lock_first_pause
        self._on_retry = on_retry
        self._ready = False

    def failure(self, what: str, returncode: int, stderr: str) -> ResticError:
        problem = classify(returncode, stderr) or ResticProblem.FAILED
        last = stderr.strip().splitlines()[-1] if stderr.strip() else "no error output"
        return ResticError(
            f"restic {what} on {self._destination.label} ({self._destination.repository}): "
            f"{problem.value} (exit {returncode}: {last})",
            problem,
        )

    def run(
        self,
        what: str,
        argv: Sequence[str],
        *,
        ensure: bool = True,
        cancel: threading.Event | None = None,
    ) -> Completed:
        """Run one restic command to its end, retrying while the repository is locked. Without
        `ensure` a missing repository is not created; `cancel` kills the command.

        Before each retry `restic unlock` removes stale locks (those of restic processes that
        are gone, such as one killed by a timeout or a stop), which restic 0.14 would otherwise
        honour until someone unlocked by hand; a live process's lock is left alone."""
        if ensure:
            self._ensure_repository()
        pause = self._lock_first_pause
        for attempt in range(1, self._lock_attempts + 1):
            done = run(
                argv, timeout=COMMAND_TIMEOUT_SECONDS, env=self.env, check=False, cancel=cancel
            )
            problem = classify(done.returncode, done.stderr)
            if problem is None:
                return done
            if cancel is not None and cancel.is_set():
                self._unlock_stale()  # the lock of the process just killed
                raise self.failure(what, done.returncode, done.stderr)
            if problem is not ResticProblem.LOCKED or attempt == self._lock_attempts:
                error = self.failure(what, done.returncode, done.stderr)
                if problem is ResticProblem.LOCKED:
                    raise ResticError(f"{error} after {attempt} attempts", problem)
                raise error
            if self._on_retry is not None:
                self._on_retry(
                    f"restic {what}: the repository is locked, attempt {attempt} of "
                    f"{self._lock_attempts}; trying again in {pause:g} s"
                )
            self._unlock_stale()
            time.sleep(pause)
            pause *= 2
        raise AssertionError("unreachable")  # the loop returns or raises on its last attempt

    def _unlock_stale(self) -> None:
        # Best effort: a failure here shows again as the command's own lock failure.
        run(unlock_argv(), timeout=COMMAND_TIMEOUT_SECONDS, env=self.env, check=False)

    def _ensure_repository(self) -> None:
        if self._ready:
            return
        check_restic_version(self.env)
        try:
            self.run("snapshots", snapshots_argv(), ensure=False)
        except ResticError as exc:
            if exc.problem is not ResticProblem.NO_REPOSITORY:
                raise
            if not self._destination.create:
                raise ResticError(
                    f"{exc}; the destination says create: false, so it is not created",
                    exc.problem,
                ) from exc
            self.run("init", init_argv(), ensure=False)
        self._ready = True

    def shared(self) -> AbstractContextManager[None]:
        return self._locks.shared(self._destination.repository)

    def snapshots(self) -> list[SnapshotEntry]:
        return parse_snapshots(self.run("snapshots", snapshots_argv()).stdout)

    def _find(self, directory: str, name: str) -> SnapshotEntry | None:
        path = "/" + stdin_path("/".join(directory_parts(directory)), check_name(name))
        found = [entry for entry in self.snapshots() if entry.paths == (path,)]
        return max(found, key=lambda entry: entry.time) if found else None

    def open_writer(self, directory: str, name: str) -> ResticWriter:
        self._ensure_repository()
        return ResticWriter(self, "/".join(directory_parts(directory)), check_name(name))

    def list_backups(self, directory: str) -> list[StoredBackup]:
        prefix = "/" + stdin_path("/".join(directory_parts(directory)), "")
        backups = []
        for entry in self.snapshots():
            if len(entry.paths) != 1 or not entry.paths[0].startswith(prefix):
                continue
            name = entry.paths[0].removeprefix(prefix)
            if "/" not in name:
                # restic keeps no size per snapshot without reading it; 0 says "not known".
                backups.append(StoredBackup(name, 0, datetime.fromisoformat(entry.time)))
        return backups

    def delete(self, directory: str, name: str) -> None:
        entry = self._find(directory, name)
        if entry is not None:
            with self._locks.exclusive(self._destination.repository):
                self.run("forget", forget_argv([entry.id]))

    def forget(
        self,
        task_id: int,
        policy: Policy,
        directory: str,
        *,
        apply: bool,
        protect: Iterable[str] = (),
        wait: bool = True,
    ) -> list[Decision] | None:
        """Every snapshot of the task, newest first, kept or removed by `restic forget --tag
        task:<id> --dry-run` with `policy`; when `apply`, the removed ones are then forgotten by
        id, except those named in `protect` (kept as "just written": two snapshots can share a
        time, and restic would pick either). Their data goes with the next `prune`. A missing
        repository is not created. Without `wait`, None when another of the daemon's commands
        holds the repository (a running backup): nothing is done then."""
        argv = forget_policy_argv(task_id, policy, dry_run=True)
        parts = "/".join(directory_parts(directory))
        with self._locks.exclusive(self._destination.repository, wait=wait) as held:
            if not held:
                return None
            check_restic_version(self.env)
            verdicts = parse_forget(self.run("forget", argv, ensure=False).stdout, parts)
            kept = set(protect)
            decisions = [
                replace(verdict.decision, keep=True, reasons=("just written",))
                if verdict.decision.name in kept and not verdict.decision.keep
                else verdict.decision
                for verdict in verdicts
            ]
            doomed = [
                verdict.snapshot_id
                for verdict, decision in zip(verdicts, decisions, strict=True)
                if not decision.keep
            ]
            if apply and doomed:
                self.run("forget", forget_argv(doomed), ensure=False)
        return decisions

    def prune(self, *, dry_run: bool = False, cancel: threading.Event | None = None) -> str:
        """`restic prune` of an existing repository (a missing one is not created): the data no
        snapshot needs any more is removed. Returns restic's report (with `dry_run`, what it
        would remove and why). `cancel` stops it (restic's prune is safe to stop midway; the
        lock of the killed process is removed)."""
        check_restic_version(self.env)
        with self._locks.exclusive(self._destination.repository):
            done = self.run("prune", prune_argv(dry_run=dry_run), ensure=False, cancel=cancel)
        return done.stdout.decode(errors="replace")

    @contextmanager
    def open_reader(self, directory: str, name: str) -> Iterator[BinaryIO]:
        entry = self._find(directory, name)
        if entry is None:
            raise DestinationError(f"no snapshot of {name} in {self._destination.repository}")
        parts = "/".join(directory_parts(directory))
        argv = dump_argv(entry.id, parts, name)
        with self.shared(), Process(argv, stdin=None, stdout=PIPE, env=self.env) as process:
            assert process.stdout_fd is not None
            with os.fdopen(os.dup(process.stdout_fd), "rb") as stream:
                yield stream
                rest = stream.read(1)
            if rest:
                return  # the reader stopped early: the process is killed on leaving
            returncode = process.wait(COMMAND_TIMEOUT_SECONDS)
            if returncode != 0:
                raise self.failure("dump", returncode, process.stderr)

    def check(self, read_data_subset: str) -> None:
        """`restic check --read-data-subset`: a ResticError naming what it found. restic checks
        under an exclusive lock of its own, so it waits here for running backups."""
        with self._locks.exclusive(self._destination.repository):
            self.run("check", check_argv(read_data_subset))

    def remove_partial(self, directory: str, name: str) -> bool:
        return False  # a killed `restic backup` writes no snapshot; its packs go with prune

    def close(self) -> None:
        pass
