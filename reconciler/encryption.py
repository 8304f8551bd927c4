"""Streaming OpenPGP symmetric encryption (AES-256 with MDC integrity) through the `gpg` binary.

The backup stream is encrypted on the backup host before any byte reaches a destination. The
passphrase travels to gpg on a private pipe (`--passphrase-fd`), never in argv, the environment or
a log. Each operation uses its own throwaway gpg home directory, and the gpg-agent that gpg starts
there is stopped afterwards, so nothing lingers and the daemon user's keyring is never touched.

Anyone can decrypt a backup without this project, with the passphrase at hand:

    gpg --decrypt backup_1_20250101020304.tar.zst.gpg | zstd -d | tar -x

(a database dump: `gpg --decrypt backup_1_20250101020304.sql.zst.gpg | zstd -d > dump.sql`);
without a terminal, add `--batch --pinentry-mode loopback --passphrase-file FILE` (the README's
"Restoring by hand", which its tests run).
"""

from __future__ import annotations

import os
import queue
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Protocol

from reconciler.checksum import Readable
from reconciler.processes import Process, ProcessError, run
from reconciler.types import ReconcilerError

CHUNK_SIZE = 1 << 20
GPG = "gpg"
_QUEUED_CHUNKS = 2  # chunks of up to 4 MiB from the SSH channel: bounded memory
_AGENT_STOP_TIMEOUT = 30.0


class EncryptionError(ReconcilerError):
    """gpg failed: a wrong passphrase, damaged or tampered data, or gpg itself missing."""


class ChunkWriter(Protocol):
    def write(self, chunk: bytes) -> None: ...
    def commit(self) -> None: ...
    def abort(self) -> None: ...


def gpg_argv(home: Path, passphrase_fd: int, mode_args: list[str]) -> list[str]:
    return [
        GPG,
        "--homedir",
        str(home),
        "--batch",
        "--quiet",
        "--no-tty",
        "--no-symkey-cache",
        "--pinentry-mode",
        "loopback",
        "--passphrase-fd",
        str(passphrase_fd),
        *mode_args,
    ]


def agent_stop_argv(home: Path) -> list[str]:
    return ["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"]


@contextmanager
def _gpg_home() -> Iterator[Path]:
    home = Path(tempfile.mkdtemp(prefix="reconciler-gpg-"))
    try:
        yield home
    finally:
        # No gpgconf, or it hung: the agent exits by itself once its home directory is gone.
        with suppress(ProcessError):
            run(agent_stop_argv(home), timeout=_AGENT_STOP_TIMEOUT, check=False)
        shutil.rmtree(home, ignore_errors=True)


def _passphrase_pipe(passphrase: str) -> int:
    """A pipe's read end already holding the passphrase line (short: fits the pipe buffer)."""
    if "\n" in passphrase or "\r" in passphrase:
        raise EncryptionError("the encryption password must be a single line")
    if not passphrase:
        raise EncryptionError("the encryption password is empty")
    read_fd, write_fd = os.pipe()
    try:
        os.write(write_fd, passphrase.encode() + b"\n")
    finally:
        os.close(write_fd)
    return read_fd


class _Gpg:
    """A gpg process fed by one thread and whose stdout another pumps into `sink`.

    `write` only queues a chunk (a few at most, then it waits): the caller, the thread reading
    the SSH channel, goes back to its channel and the stream check while gpg encrypts, instead of
    waiting for gpg to take each chunk in.
    """

    def __init__(self, mode_args: list[str], passphrase: str, sink: Callable[[bytes], None]):
        self._home_context = _gpg_home()
        home = self._home_context.__enter__()
        fd = _passphrase_pipe(passphrase)
        try:
            self.process = Process(gpg_argv(home, fd, mode_args), pass_fds=(fd,))
        except ProcessError as exc:
            self._home_context.__exit__(None, None, None)
            raise EncryptionError(f"cannot start gpg: {exc}") from exc
        finally:
            os.close(fd)
        self._sink = sink
        self.sink_error: BaseException | None = None
        self._feed_error: BaseException | None = None
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=_QUEUED_CHUNKS)
        self._input_closed = False
        self._pump = threading.Thread(target=self._pump_stdout, name="gpg-stdout", daemon=True)
        self._pump.start()
        self._feeder = threading.Thread(target=self._feed_stdin, name="gpg-stdin", daemon=True)
        self._feeder.start()

    def _pump_stdout(self) -> None:
        stdout = self.process.stdout_fd
        assert stdout is not None
        while chunk := os.read(stdout, CHUNK_SIZE):
            if self.sink_error is not None:
                continue  # keep draining so gpg never blocks; the error is reported on finish
            try:
                self._sink(chunk)
            except BaseException as exc:
                self.sink_error = exc

    def _feed_stdin(self) -> None:
        while (chunk := self._queue.get()) is not None:
            if self._feed_error is not None:
                continue  # keep draining so `write` never blocks; the error is reported there
            try:
                self.process.write(chunk)
            except BaseException as exc:
                self._feed_error = exc
        self.process.close_stdin()

    def write(self, chunk: bytes) -> None:
        if self.sink_error is not None:
            raise self.sink_error
        if isinstance(self._feed_error, BrokenPipeError):
            raise EncryptionError(
                f"gpg stopped early: {self._finish_after_kill()}"
            ) from self._feed_error
        if self._feed_error is not None:
            raise self._feed_error
        self._queue.put(chunk)

    def _close_input(self) -> None:
        """Let the feeder write what is queued, then close gpg's stdin; wait for it."""
        if not self._input_closed:
            self._input_closed = True
            self._queue.put(None)
        self._feeder.join()

    def _finish_after_kill(self) -> str:
        self.process.kill()
        self._close_input()
        self._join()
        return self.process.stderr

    def _join(self) -> None:
        self.process.wait()
        self._pump.join()
        self.process.close()
        self._home_context.__exit__(None, None, None)

    def finish(self) -> None:
        """Close gpg's input, wait for all output to be pumped; raise if anything failed."""
        self._close_input()
        self._join()
        if self.sink_error is not None:
            raise self.sink_error
        failure = self.process.failure()
        if failure is not None:
            raise EncryptionError(str(failure)) from failure
        if self._feed_error is not None:
            raise self._feed_error

    def kill(self) -> None:
        self._finish_after_kill()


class EncryptingWriter:
    """A BackupWriter that encrypts what is written and passes ciphertext on to `inner`.

    `commit` finishes encryption and commits `inner` only if gpg succeeded; `abort` aborts both.
    `size` is the number of ciphertext bytes written to `inner`.
    """

    def __init__(self, inner: ChunkWriter, passphrase: str) -> None:
        self._inner = inner
        self.size = 0
        self._gpg = _Gpg(
            [
                "--symmetric",
                "--cipher-algo",
                "AES256",
                "--s2k-digest-algo",
                "SHA512",
                "--compress-algo",
                "none",  # the stream is already zstd-compressed
                "--output",
                "-",
            ],
            passphrase,
            self._forward,
        )

    def _forward(self, chunk: bytes) -> None:
        self.size += len(chunk)
        self._inner.write(chunk)

    def write(self, chunk: bytes) -> None:
        self._gpg.write(chunk)

    def commit(self) -> None:
        try:
            self._gpg.finish()
        except BaseException:
            self._inner.abort()
            raise
        self._inner.commit()

    def abort(self) -> None:
        try:
            self._gpg.kill()
        finally:
            self._inner.abort()


def decrypt_stream(source: Readable, sink: Callable[[bytes], None], passphrase: str) -> None:
    """Decrypt an OpenPGP message from `source` into `sink`; raises EncryptionError when the
    passphrase is wrong or the data was damaged or tampered with (MDC check)."""
    gpg = _Gpg(["--decrypt"], passphrase, sink)
    try:
        while chunk := source.read(CHUNK_SIZE):
            gpg.write(chunk)
    except BaseException:
        gpg.kill()
        raise
    gpg.finish()
