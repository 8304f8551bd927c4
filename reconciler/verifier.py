"""Checks a backup's stream as it passes on its way to the destination (reconciler.completeness
judges it); the one owner of the zstd process that decompresses a compressed stream for the check.

A compressed stream has to be decompressed to be judged (a zstd frame says nothing about the tar
or dump inside it). The thread that reads the SSH channel only writes each chunk into zstd's stdin
(a pipe write, which releases the GIL while it waits); zstd decompresses in its own process, on
another core, and also verifies every frame's checksum and that the stream ends where a frame
ends; a reader thread takes the plaintext (`os.read`, GIL released) and feeds the check. Nothing
of the plaintext is kept beyond the check's bounded state. An uncompressed stream is checked in
the calling thread: walking tar headers costs a few operations per member, not per byte.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import threading
from contextlib import suppress
from types import TracebackType

from reconciler.commands import BackupFormat
from reconciler.completeness import CompletenessCheck, check_for

PIPE_SIZE = 1 << 20  # Linux's default pipe-max-size: fewer, larger hand-offs to and from zstd
READ_SIZE = 64 << 10  # small: a read never runs far into a large member's data
SPLICE_AT_LEAST = 64 << 10
_ZSTD_ERROR_CHARS = 300


def _widen(fd: int) -> None:
    with suppress(OSError, AttributeError):  # only a hint; Linux-only and capped by the kernel
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)


class StreamVerifier:
    """Feed it every chunk of a backup stream, then `finish`; use as a context manager."""

    def __init__(self, form: BackupFormat) -> None:
        self._check: CompletenessCheck = check_for(form.source_type)
        self._process: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._reader_error: BaseException | None = None
        self._zstd_gone = False
        if form.compressed:
            self._process = subprocess.Popen(
                ["zstd", "-d", "-c", "-q"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            assert self._process.stdin is not None
            assert self._process.stdout is not None
            _widen(self._process.stdin.fileno())
            _widen(self._process.stdout.fileno())
            self._reader = threading.Thread(
                target=self._read_plaintext,
                args=(self._process.stdout.fileno(),),
                name="backup-verify",
                daemon=True,
            )
            self._reader.start()

    def __enter__(self) -> StreamVerifier:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _read_plaintext(self, fd: int) -> None:
        """Feed zstd's output to the check; member data the check would not look at is spliced
        to /dev/null inside the kernel, never copied into this process."""
        process = self._process
        splicing = True
        try:
            with open(os.devnull, "wb") as devnull:
                while True:
                    unread = self._check.unread()
                    moved = None
                    if splicing and unread >= SPLICE_AT_LEAST:
                        try:
                            moved = os.splice(fd, devnull.fileno(), unread)
                        except OSError:  # a kernel or sandbox without splice: read instead
                            splicing = False
                        else:
                            self._check.skip(moved)
                    if moved is None:
                        chunk = os.read(fd, READ_SIZE)
                        moved = len(chunk)
                        self._check.feed(chunk)
                    if not moved:
                        return
        except BaseException as exc:  # reported by finish(); the thread must not die silently
            self._reader_error = exc
            # Nobody reads zstd's output any more: stop it, so that the SSH thread's next write
            # fails at once (BrokenPipeError) instead of waiting on a full pipe forever.
            if process is not None:
                with suppress(OSError):
                    process.kill()

    def feed(self, chunk: bytes) -> None:
        if self._process is None:
            self._check.feed(chunk)
            return
        if self._zstd_gone:  # zstd stopped on bad input: finish() reports its error
            return
        assert self._process.stdin is not None
        try:
            self._process.stdin.write(chunk)
        except BrokenPipeError:
            self._zstd_gone = True

    def finish(self) -> str | None:
        """At the end of the stream: None when it is complete, else why it is not."""
        process = self._process
        if process is not None:
            assert process.stdin is not None
            assert process.stderr is not None
            with suppress(BrokenPipeError):
                process.stdin.close()
            if self._reader is not None:
                self._reader.join()
            error = process.stderr.read().decode(errors="replace").strip()
            if process.wait() != 0:
                detail = f": {error[:_ZSTD_ERROR_CHARS]}" if error else ""
                return f"the compressed stream is damaged or cut short (zstd{detail})"
            if self._reader_error is not None:
                return f"reading the decompressed stream failed: {self._reader_error}"
        return self._check.problem()

    def close(self) -> None:
        """Stop zstd (if the stream was abandoned) and release its pipes; safe to repeat."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.kill()
        process.wait()
        if self._reader is not None:
            self._reader.join()
        for pipe in (process.stdin, process.stdout, process.stderr):
            if pipe is not None:
                with suppress(OSError):
                    pipe.close()
