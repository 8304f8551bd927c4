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

import os
import threading
from types import TracebackType

from reconciler.commands import BackupFormat
from reconciler.completeness import CompletenessCheck, check_for
from reconciler.processes import Process

READ_SIZE = 64 << 10  # small: a read never runs far into a large member's data
SPLICE_AT_LEAST = 64 << 10
_ZSTD_ERROR_CHARS = 300
ZSTD_DECOMPRESS = ("zstd", "-d", "-c", "-q")


class StreamVerifier:
    """Feed it every chunk of a backup stream, then `finish`; use as a context manager."""

    def __init__(self, form: BackupFormat) -> None:
        self._check: CompletenessCheck = check_for(form.source_type)
        self._process: Process | None = None
        self._reader: threading.Thread | None = None
        self._reader_error: BaseException | None = None
        self._zstd_gone = False
        if form.compressed:
            # Pipes widened by Process: fewer, larger hand-offs to and from zstd.
            self._process = Process(ZSTD_DECOMPRESS)
            assert self._process.stdout_fd is not None
            self._reader = threading.Thread(
                target=self._read_plaintext,
                args=(self._process.stdout_fd,),
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
                process.kill()

    def feed(self, chunk: bytes) -> None:
        if self._process is None:
            self._check.feed(chunk)
            return
        if self._zstd_gone:  # zstd stopped on bad input: finish() reports its error
            return
        try:
            self._process.write(chunk)
        except BrokenPipeError:
            self._zstd_gone = True

    def finish(self) -> str | None:
        """At the end of the stream: None when it is complete, else why it is not."""
        process = self._process
        if process is not None:
            process.close_stdin()
            if self._reader is not None:
                self._reader.join()
            if process.wait() != 0:
                error = process.stderr
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
        process.kill()
        process.wait()
        if self._reader is not None:
            self._reader.join()
        process.close()
