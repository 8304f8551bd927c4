"""A restore drill: `reconciler verify` of a task's newest backup, recorded as a run of kind
`verify`, with its log, its end and a notification when it fails.

Admission (never beside the task's backup, its server's limits) is the runner's, as for a
backup; the proof itself is `reconciler.verify`'s, reached through `_prove` alone, so every kind
of destination `verify` reads is drilled the same way.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from reconciler.backup import (
    INTERRUPTED_BY_STOP,
    LOG_TAIL_LINES,
    MAX_RUN_LOG_LINES,
    RunLog,
    RunResult,
    notify_outcome,
)
from reconciler.models import ResolvedTask
from reconciler.notify import RunOutcome
from reconciler.repolocks import RepositoryLocks
from reconciler.scratchload import ScratchLoadError, load_into_scratch
from reconciler.secrets import Secrets
from reconciler.state.runs import RunRecord, Runs
from reconciler.types import Clock, RunStatus
from reconciler.verify import Verification, newest_verifiable_run, verify

NOTHING_TO_DRILL = "there is no successful backup to verify yet"


class DrillPipeline:
    def __init__(
        self,
        *,
        runs: Runs,
        secrets: Secrets,
        clock: Clock,
        known_hosts: Path | None = None,
        max_log_lines: int = MAX_RUN_LOG_LINES,
        repository_locks: RepositoryLocks | None = None,
    ) -> None:
        self._repository_locks = repository_locks
        self._runs = runs
        self._secrets = secrets
        self._clock = clock
        self._known_hosts = known_hosts
        self._max_log_lines = max_log_lines

    def run(
        self,
        task: ResolvedTask,
        run_id: int,
        started: datetime,
        cancel: threading.Event,
        recorded: Callable[[RunResult], None],
    ) -> None:
        """Verify the task's newest backup as run `run_id` (recorded running since `started`),
        record its end and tell `recorded`, then notify. A drill reads one stream through and
        is not cut short; `cancel` set before it starts fails it as interrupted."""
        tail: deque[str] = deque(maxlen=LOG_TAIL_LINES)
        run_log = RunLog(self._runs, run_id, self._clock, self._max_log_lines)

        def log(line: str) -> None:
            tail.append(line)
            run_log(line)

        status, reason, size = RunStatus.FAILED, "", None
        try:
            if cancel.is_set():
                raise RuntimeError(INTERRUPTED_BY_STOP)
            backup, verification = self._prove(task, log)
            size = verification.size
            log(verification.summary())
            problems = list(verification.problems)
            if not problems and task.scratch_server is not None:
                problems += self._load(task, backup, run_id, log)
            if problems:
                reason = f"{verification.name}: " + "; ".join(problems)
            else:
                status = RunStatus.SUCCESSFUL
        except Exception as exc:
            reason = str(exc) or type(exc).__name__
            log(f"failed: {reason}")
        finally:
            run_log.flush(final=True)
            finished = self._clock.now()
            self._runs.finish_run(run_id, status, finished, reason=reason or None, size=size)
        recorded(RunResult(status, finished - started, size, reason or None))
        outcome = RunOutcome(
            task_id=task.id,
            task_label=task.task.label,
            successful=status is RunStatus.SUCCESSFUL,
            size=size,
            duration=finished - started,
            reason=reason or None,
            log_tail=tuple(tail),
            drill=True,
        )
        notify_outcome(self._runs, self._secrets, task, run_id, outcome, log)
        run_log.flush(final=True)

    def _prove(
        self, task: ResolvedTask, log: Callable[[str], None]
    ) -> tuple[RunRecord, Verification]:
        backup = newest_verifiable_run(self._runs, task.id)
        if backup is None:
            raise RuntimeError(NOTHING_TO_DRILL)
        log(f"restore drill: verifying {backup.backup_name} (run {backup.id})")
        verification = verify(
            task,
            backup,
            secrets=self._secrets,
            known_hosts=self._known_hosts,
            repository_locks=self._repository_locks,
        )
        return backup, verification

    def _load(
        self, task: ResolvedTask, backup: RunRecord, run_id: int, log: Callable[[str], None]
    ) -> list[str]:
        """Load the verified dump into a scratch database (`verify.load_into`); what failed."""
        try:
            loaded = load_into_scratch(
                task, backup, run_id, secrets=self._secrets, log=log, known_hosts=self._known_hosts
            )
        except ScratchLoadError as exc:
            return [str(exc)]
        log(loaded.summary())
        return list(loaded.problems)
