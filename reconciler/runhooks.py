"""A task's hooks: its `before` and `after` shell commands, run on its server over the run's SSH
connection, their output (stdout and stderr as one stream) in the run log, each line prefixed
with the hook that wrote it.

The `before` hooks run in order and the first that fails (a non-zero exit, its timeout, a lost
connection) stops them; the caller then takes no backup. Every `after` hook runs, whatever
happened before it, and sees how the run went in `RECONCILER_RESULT`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from reconciler.commands import CommandError, make_hook_command
from reconciler.executor import (
    CommandCancelled,
    CommandTimeout,
    ExecutorError,
    OutputLines,
    RemoteShell,
)

# A hook's own lines in the run log, at most; past that they are counted, not stored.
HOOK_OUTPUT_LINES = 1_000
_SUMMARY_CHARS = 60


class HookStage(StrEnum):
    BEFORE = "before"
    AFTER = "after"


class Outcome(StrEnum):
    """What an `after` hook reads in RECONCILER_RESULT."""

    SUCCESS = "success"
    FAILURE = "failure"


@dataclass(frozen=True, slots=True)
class HookFailure:
    stage: HookStage
    number: int  # 1-based, in the order of the task's list
    text: str
    problem: str

    def __str__(self) -> str:
        return f"{self.stage.value} hook {self.number} ({summary(self.text)}) {self.problem}"


def summary(text: str) -> str:
    """A hook's first line, shortened, to name it in a reason."""
    first = text.strip().splitlines()[0] if text.strip() else ""
    return first if len(first) <= _SUMMARY_CHARS else first[: _SUMMARY_CHARS - 3] + "..."


def hook_environment(
    stage: HookStage, task_id: int, run_id: int, result: Outcome | None = None
) -> dict[str, str]:
    environment = {
        "RECONCILER_HOOK": stage.value,
        "RECONCILER_TASK_ID": str(task_id),
        "RECONCILER_RUN_ID": str(run_id),
    }
    if result is not None:
        environment["RECONCILER_RESULT"] = result.value
    return environment


class _HookLog:
    """One hook's output lines into the run log, prefixed, at most HOOK_OUTPUT_LINES of them."""

    def __init__(self, prefix: str, log: Callable[[str], None]) -> None:
        self._prefix = prefix
        self._log = log
        self.logged = 0
        self.dropped = 0

    def __call__(self, line: str) -> None:
        if self.logged >= HOOK_OUTPUT_LINES:
            self.dropped += 1
            return
        self.logged += 1
        self._log(f"{self._prefix}{line}")

    def close(self) -> None:
        if self.dropped:
            self._log(f"{self._prefix}[{self.dropped:,} more lines not logged]")


def run_hook(
    shell: RemoteShell,
    stage: HookStage,
    number: int,
    text: str,
    environment: dict[str, str],
    *,
    timeout: float,
    log: Callable[[str], None],
    cancel: threading.Event | None = None,
) -> HookFailure | None:
    """Run one hook; what went wrong, or None when it exited 0. Raises CommandCancelled."""
    label = f"{stage.value} hook {number}"
    log(f"{label}: running {summary(text)}")
    hook_log = _HookLog(f"{label}: ", log)
    lines = OutputLines(hook_log)

    def failed(problem: str) -> HookFailure:
        return HookFailure(stage, number, text, problem)

    try:
        command = make_hook_command(text, environment)
        result = shell.stream(
            command,
            lines.feed,
            timeout=timeout,
            on_stderr_line=hook_log,
            cancel=cancel,
        )
    except CommandCancelled:
        raise
    except CommandTimeout:
        return failed(f"did not finish within its timeout of {timeout:g} s")
    except (CommandError, ExecutorError) as exc:
        return failed(f"could not run: {exc}")
    finally:
        lines.flush()
        hook_log.close()
    if result.exit_status != 0:
        last = f": {lines.tail[-1]}" if lines.tail else ""
        return failed(f"exited with {result.exit_status}{last}")
    return None


def run_before_hooks(
    shell: RemoteShell,
    commands: Sequence[str],
    environment: dict[str, str],
    *,
    timeout: float,
    log: Callable[[str], None],
    cancel: threading.Event,
) -> HookFailure | None:
    """Run the `before` hooks in order until one fails; that one, or None."""
    for number, text in enumerate(commands, 1):
        failure = run_hook(
            shell,
            HookStage.BEFORE,
            number,
            text,
            environment,
            timeout=timeout,
            log=log,
            cancel=cancel,
        )
        if failure is not None:
            return failure
    return None


def run_after_hooks(
    shell: RemoteShell,
    commands: Sequence[str],
    environment: dict[str, str],
    *,
    timeout: float,
    log: Callable[[str], None],
) -> list[HookFailure]:
    """Run every `after` hook, each whatever the others did; the ones that failed.

    They take no cancel: an `after` hook often undoes a `before` (restarts what it stopped), so it
    runs even as the daemon stops, bounded by its timeout.
    """
    failures = []
    for number, text in enumerate(commands, 1):
        failure = run_hook(
            shell, HookStage.AFTER, number, text, environment, timeout=timeout, log=log
        )
        if failure is not None:
            failures.append(failure)
    return failures
