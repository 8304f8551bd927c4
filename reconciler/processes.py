"""The one place the daemon starts a local program (git, gpg, gpgconf, zstd, tar).

- A command is an argv list, built by a pure function where it is used; nothing here goes
  through a shell, and a string is refused rather than split.
- Error output is kept bounded: the first and the last lines of stderr, each line cut at a fixed
  length, whatever the program writes (a program writing gigabytes to stderr costs a few KB).
- Every program runs in its own process group, so a timeout or a kill stops what it started too
  (git's ssh, gpg's agent launcher), and a terminal's Ctrl-C reaches the daemon, not its tools.
- Every failure is a ProcessError naming the program, how it ended (exit code, signal, timeout,
  or why it could not start) and its bounded stderr. Callers wrap it in their own error type.

Two shapes: `run` for a program run to completion (stdout collected, a deadline), and
`Process` for one whose stdin and stdout are streamed by the caller (gpg, zstd, tar in a backup
or a restore), which ends when its streams do.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from reconciler.types import ReconcilerError

HEAD_LINES = 8
TAIL_LINES = 8
LINE_CHARS = 400
PIPE = subprocess.PIPE
# Linux's default pipe-max-size: a 1 MiB pipe lets a program read or write in large pieces, so a
# stream costs fewer system calls and context switches on both sides (the default is 64 KiB).
PIPE_SIZE = 1 << 20
_READ_SIZE = 1 << 16


class ProcessError(ReconcilerError):
    """A program could not start, exited non-zero, was killed by a signal, or timed out."""

    def __init__(self, program: str, how: str, stderr: str = "") -> None:
        self.program = program
        self.how = how
        self.stderr = stderr
        super().__init__(f"{program} {how}: {stderr}" if stderr else f"{program} {how}")


def program_name(argv: Sequence[str]) -> str:
    """How errors name a command: its program and, for git, the subcommand (`git push`)."""
    name = Path(argv[0]).name
    if name != "git":
        return name
    arguments = iter(argv[1:])
    for arg in arguments:
        if arg in ("-C", "-c"):  # git's options that take the next argument as their value
            next(arguments, None)
        elif not arg.startswith("-"):
            return f"{name} {arg}"
    return name


def how_it_ended(returncode: int) -> str:
    """`exited with 2`, or `was killed by SIGKILL` (Popen reports a signal as minus its number)."""
    if returncode >= 0:
        return f"exited with {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    return f"was killed by {name}"


class StderrExcerpt:
    """The first HEAD_LINES and last TAIL_LINES lines of a stream, each cut at LINE_CHARS."""

    def __init__(self) -> None:
        self._head: list[str] = []
        self._tail: deque[str] = deque(maxlen=TAIL_LINES)
        self._left_out = 0
        self._partial = bytearray()

    def feed(self, data: bytes) -> None:
        *complete, rest = data.split(b"\n")
        for piece in complete:
            self._partial += piece[: max(0, LINE_CHARS - len(self._partial))]
            self._line(bytes(self._partial))
            self._partial.clear()
        self._partial += rest[: max(0, LINE_CHARS - len(self._partial))]

    def _line(self, raw: bytes) -> None:
        line = raw.decode(errors="replace").rstrip()
        if len(self._head) < HEAD_LINES:
            self._head.append(line)
            return
        if len(self._tail) == TAIL_LINES:
            self._left_out += 1
        self._tail.append(line)

    def text(self) -> str:
        if self._partial:
            self._line(bytes(self._partial))
            self._partial.clear()
        lines = list(self._head)
        if self._left_out:
            lines.append(f"[... {self._left_out} lines left out ...]")
        lines.extend(self._tail)
        return "\n".join(lines).strip()


def _widen(fd: int) -> None:
    with suppress(OSError, AttributeError):  # only a hint; Linux-only and capped by the kernel
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)


def _check_argv(argv: Sequence[str]) -> list[str]:
    if isinstance(argv, str | bytes) or not argv:
        raise TypeError(f"a command is a non-empty list of arguments, not {argv!r}")
    return [str(arg) for arg in argv]


class Process:
    """A started program whose stdin and stdout the caller streams.

    `stdin`/`stdout`: PIPE (this object's `write`/`stdout_fd`), an open file or descriptor to
    connect directly (the previous or next stage of a pipeline), or None (/dev/null). Pipes are
    widened to PIPE_SIZE. stderr is always drained by a thread into a bounded excerpt. Use as a
    context manager, or call `close`: a process still running then is killed.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        stdin: int | IO[bytes] | None = PIPE,
        stdout: int | IO[bytes] | None = PIPE,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        pass_fds: Sequence[int] = (),
    ) -> None:
        self.argv = _check_argv(argv)
        self.name = program_name(self.argv)
        self._excerpt = StderrExcerpt()
        try:
            self._popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL if stdin is None else stdin,
                stdout=subprocess.DEVNULL if stdout is None else stdout,
                stderr=PIPE,
                cwd=cwd,
                env=None if env is None else dict(env),
                pass_fds=tuple(pass_fds),
                bufsize=0,
                start_new_session=True,
            )
        except OSError as exc:
            raise ProcessError(self.name, f"could not be started ({exc.strerror or exc})") from exc
        self.stdin_fd = None if self._popen.stdin is None else self._popen.stdin.fileno()
        self.stdout_fd = None if self._popen.stdout is None else self._popen.stdout.fileno()
        for fd in (self.stdin_fd, self.stdout_fd):
            if fd is not None:
                _widen(fd)
        assert self._popen.stderr is not None
        self._stderr_reader = threading.Thread(
            target=self._drain_stderr,
            args=(self._popen.stderr.fileno(),),
            name=f"{self.name}-stderr",
            daemon=True,
        )
        self._stderr_reader.start()

    def __enter__(self) -> Process:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _drain_stderr(self, fd: int) -> None:
        with suppress(OSError):
            while data := os.read(fd, _READ_SIZE):
                self._excerpt.feed(data)

    @property
    def returncode(self) -> int | None:
        return self._popen.poll()

    def write(self, data: bytes | memoryview) -> None:
        """All of `data` into the program's stdin; BrokenPipeError once it stopped reading."""
        assert self.stdin_fd is not None, "stdin is not a pipe"
        view = memoryview(data)
        while view:
            view = view[os.write(self.stdin_fd, view) :]

    def close_stdin(self) -> None:
        """End of input; the program sees EOF."""
        if self._popen.stdin is not None:
            with suppress(BrokenPipeError):
                self._popen.stdin.close()
            self.stdin_fd = None

    def wait(self, timeout: float | None = None) -> int:
        """The exit status once the program ended and its stderr is read; a program still
        running after `timeout` seconds is killed (its whole group) and a ProcessError raised."""
        try:
            returncode = self._popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            self._popen.wait()
            self._stderr_reader.join()
            raise ProcessError(
                self.name, f"timed out after {timeout:g} s and was stopped", self.stderr
            ) from None
        self._stderr_reader.join()
        return returncode

    def check(self, timeout: float | None = None) -> None:
        """`wait`, then a ProcessError unless the program exited with 0."""
        returncode = self.wait(timeout)
        if returncode != 0:
            raise ProcessError(self.name, how_it_ended(returncode), self.stderr)

    def failure(self) -> ProcessError | None:
        """How the (ended) program failed, or None when it exited with 0."""
        returncode = self.wait()
        return (
            None
            if returncode == 0
            else ProcessError(self.name, how_it_ended(returncode), self.stderr)
        )

    @property
    def stderr(self) -> str:
        """The bounded excerpt of stderr (complete once `wait` returned)."""
        return self._excerpt.text()

    def kill(self) -> None:
        """SIGKILL to the program's process group; nothing if it is gone already."""
        if self._popen.returncode is None:
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(self._popen.pid, signal.SIGKILL)

    def close(self) -> None:
        """Kill the program if it is still running, reap it and release its pipes."""
        if self._popen.poll() is None:
            self.kill()
        self._popen.wait()
        self._stderr_reader.join()
        for pipe in (self._popen.stdin, self._popen.stdout, self._popen.stderr):
            if pipe is not None:
                with suppress(OSError):
                    pipe.close()
        self.stdin_fd = self.stdout_fd = None


@dataclass(frozen=True, slots=True)
class Completed:
    returncode: int
    stdout: bytes
    stderr: str  # the bounded excerpt


def run(
    argv: Sequence[str],
    *,
    timeout: float,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    input: bytes | None = None,
    check: bool = True,
    pass_fds: Sequence[int] = (),
    cancel: threading.Event | None = None,
) -> Completed:
    """Run a program to completion: its stdout, exit status and stderr excerpt.

    A non-zero exit is a ProcessError when `check`; past `timeout` seconds the program's whole
    process group is killed and a ProcessError raised either way. Setting `cancel` kills it too
    (within half a second), and it ends as killed by SIGKILL.
    """
    with Process(
        argv, stdin=PIPE if input is not None else None, cwd=cwd, env=env, pass_fds=pass_fds
    ) as process:
        chunks: list[bytes] = []
        # Input and output in threads of their own: a program that reads no input, or writes
        # more output than a pipe holds, cannot hold us past the deadline.
        threads = [
            threading.Thread(
                target=_read_all, args=(process.stdout_fd, chunks), name=f"{process.name}-stdout"
            )
        ]
        if input is not None:
            threads.append(
                threading.Thread(
                    target=_write_all, args=(process, input), name=f"{process.name}-stdin"
                )
            )
        ended = threading.Event()
        if cancel is not None:
            threads.append(
                threading.Thread(
                    target=_kill_when, args=(process, cancel, ended), name=f"{process.name}-cancel"
                )
            )
        for thread in threads:
            thread.start()
        try:
            returncode = process.wait(timeout)
        finally:
            ended.set()
            for thread in threads:
                # Bounded too: a program's own child that left its group may still hold stdout.
                thread.join(timeout)
        if check and returncode != 0:
            raise ProcessError(process.name, how_it_ended(returncode), process.stderr)
        return Completed(returncode, b"".join(chunks), process.stderr)


def _kill_when(process: Process, cancel: threading.Event, ended: threading.Event) -> None:
    while not cancel.wait(0.5):
        if ended.is_set():
            return
    process.kill()


def _write_all(process: Process, data: bytes) -> None:
    with suppress(BrokenPipeError):  # it stopped reading: its exit status says why
        process.write(data)
    process.close_stdin()


def _read_all(fd: int | None, chunks: list[bytes]) -> None:
    assert fd is not None
    with suppress(OSError):
        while data := os.read(fd, _READ_SIZE):
            chunks.append(data)


def pipeline(
    argvs: Sequence[Sequence[str]], *, stdout: int | IO[bytes] | None = PIPE
) -> list[Process]:
    """Programs piped one into the next: the first reads its stdin pipe (`[0].write`), the last
    writes to `stdout`. On a failure to start one, those already started are stopped."""
    processes: list[Process] = []
    try:
        for index, argv in enumerate(argvs):
            upstream = processes[-1]._popen.stdout if processes else None
            last = index == len(argvs) - 1
            processes.append(
                Process(
                    argv,
                    stdin=upstream if upstream is not None else PIPE,
                    stdout=stdout if last else PIPE,
                )
            )
            if upstream is not None:
                upstream.close()  # the next stage holds the read end now
                processes[-2].stdout_fd = None
    except BaseException:
        for process in processes:
            process.close()
        raise
    return processes
