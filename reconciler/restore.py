"""Restore a backup from its destination: fetch, decrypt, decompress, unpack, verify.

Everything is streamed: destination reader -> gpg (when encrypted) -> `zstd -d` (when compressed)
-> `tar -x` (files) or the `.sql` file (database). zstd checks its frame checksums, tar notices a
truncated archive and gpg checks the MDC, and any non-zero exit fails the restore. Output goes to a
staging directory inside the target first and is moved into place only when every check passed, so
a damaged backup never leaves half a restore behind. A partial restore (`paths`) hands tar the
chosen members after `--`, verbatim (no wildcards, no backslash unquoting), through the same
extraction; a path tar does not find fails the restore and so leaves nothing either.

`stream_plaintext` is the reading path shared with `verify` and `ls`: the decrypted, decompressed
backup into a pipe that a consumer reads on a thread, nothing written to disk.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import IO, TypeVar

from reconciler.checksum import Readable
from reconciler.commands import DUMP_EXTENSION, BackupFormat, archive_top
from reconciler.completeness import DUMP_TAIL_WINDOW, dump_tail_complete
from reconciler.destinations import open_destination
from reconciler.encryption import CHUNK_SIZE, decrypt_stream
from reconciler.models import ResolvedTask, SourceType
from reconciler.processes import Process, pipeline
from reconciler.retention import own_backups
from reconciler.secrets import Secrets
from reconciler.state.runs import RunRecord
from reconciler.types import ReconcilerError

_T = TypeVar("_T")


class RestoreError(ReconcilerError):
    """The backup cannot be found, decrypted or unpacked, or it is incomplete."""


def choose_backup(task: ResolvedTask, run: RunRecord | None, names: list[str]) -> str:
    """The run's backup, else the task's newest one among `names` (a destination listing)."""
    if run is not None:
        if run.task_id != task.id:
            raise RestoreError(f"run {run.id} belongs to task {run.task_id}, not task {task.id}")
        if run.backup_name is None:
            raise RestoreError(f"run {run.id} stored no backup (status {run.status.value})")
        if run.backup_name not in names:
            raise RestoreError(
                f"the backup {run.backup_name} of run {run.id} is no longer on the destination"
            )
        return run.backup_name
    own = own_backups(names, task.id, task.task.storage.appended_filename)
    if not own:
        raise RestoreError(f"task {task.id} has no backups on {task.destination.label}")
    return max(own, key=lambda name: (own[name].taken_at, name))


def check_dump_complete(dump: Path) -> None:
    """Refuse a dump cut short: zstd and gpg check their own framing, but a dump stored without
    compression or encryption has nothing else to tell a truncated file from a whole one (the same
    rule a run applies before storing it: reconciler.completeness)."""
    with dump.open("rb") as file:
        size = file.seek(0, 2)
        file.seek(max(0, size - DUMP_TAIL_WINDOW))
        tail = file.read()
    if not dump_tail_complete(tail, whole=size <= DUMP_TAIL_WINDOW):
        raise RestoreError(
            "the backup is damaged or incomplete: the dump does not end with its tool's "
            "closing comment (mysqldump: '-- Dump completed', pg_dump: '-- PostgreSQL database "
            "dump complete')"
        )


def member_path(text: str) -> str:
    """A `--path` as a tar member name: relative, normalised (`./` and empty or `.` components and
    a trailing slash dropped), no `..`, no NUL; RestoreError saying why otherwise."""
    why = None
    parts = [part for part in text.split("/") if part not in ("", ".")]
    if "\0" in text:
        why = "contains a NUL byte"
    elif text.startswith("/"):
        why = "is absolute: give it as the backup lists it (reconciler ls), e.g. site/docs"
    elif ".." in parts:
        why = "contains '..'"
    elif not parts:
        why = "names no file or folder"
    if why is not None:
        raise RestoreError(f"--path {text!r} {why}")
    return "/".join(parts)


def reading_keys(
    task: ResolvedTask, name: str, secrets: Secrets
) -> tuple[BackupFormat, str | None]:
    """How the backup `name` of `task` is stored, and the passphrase it needs (None: none)."""
    form = BackupFormat.of(name)
    if form is None:
        raise RestoreError(f"{name}: unknown backup format")
    if not form.encrypted:
        return form, None
    if task.task.encryption_password is None:
        raise RestoreError(f"{name} is encrypted but the task has no encryption_password")
    return form, secrets.resolve(task.task.encryption_password)


def _sql_name(backup: str, form: BackupFormat) -> str:
    return f"{backup.removesuffix(f'.{form.extension}')}.{DUMP_EXTENSION}"


def restore(
    task: ResolvedTask,
    *,
    run: RunRecord | None,
    to: Path,
    secrets: Secrets,
    known_hosts: Path | None = None,
    paths: Sequence[str] = (),
) -> Path:
    """Restore the run's backup (or the task's newest, as the destination lists them) into the
    directory `to`, only the members `paths` (and everything under a folder) when given; returns
    what was written: the unpacked top-level entry (files) or the `.sql` file (database)."""
    members = [member_path(path) for path in paths]
    if members and task.task.source.type is not SourceType.FILES:
        raise RestoreError(
            f"--path selects files of a files backup; task {task.id} backs up a database"
        )
    root = task.task.source.path
    if members and root is not None and archive_top(root) == ".":
        # A tar of `/` names its members `./etc/...`, and tar matches names as they are stored.
        members = [f"./{member}" for member in members]
    to.mkdir(parents=True, exist_ok=True)
    store = open_destination(task.destination, secrets.resolve, known_hosts=known_hosts)
    try:
        directory = task.task.storage.path
        name = choose_backup(task, run, [b.name for b in store.list_backups(directory)])
        form, passphrase = reading_keys(task, name, secrets)
        staging = Path(tempfile.mkdtemp(prefix=".restore-", dir=to))
        try:
            sql_name = _sql_name(name, form)
            with store.open_reader(directory, name) as reader:
                try:
                    _unpack(reader, passphrase, form, staging, sql_name, members)
                except RestoreError as exc:
                    missing = _missing_members(exc, name, members)
                    if missing is None:
                        raise
                    raise missing from exc
            if form.source_type is SourceType.DATABASE:
                check_dump_complete(staging / sql_name)
            return _move_into_place(staging, to)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    finally:
        store.close()


def decompress_argvs(form: BackupFormat) -> list[list[str]]:
    """The programs that turn a (decrypted) backup of `form` into its tar or dump."""
    return [["zstd", "-d", "-c", "-q"]] if form.compressed else []


def unpack_argvs(form: BackupFormat, staging: Path, members: Sequence[str] = ()) -> list[list[str]]:
    """The programs a backup of `form` is piped through (nothing for a plain dump); a files
    backup's tar extracts only `members` when given."""
    argvs = decompress_argvs(form)
    if form.source_type is SourceType.FILES:
        tar = ["tar", "-x", "-f", "-", "-C", str(staging)]
        if members:
            tar += ["--no-wildcards", "--no-unquote", "--", *members]
        argvs.append(tar)
    return argvs


def _missing_members(error: RestoreError, name: str, members: Sequence[str]) -> RestoreError | None:
    """The paths tar said it did not find, as one sentence; None when that is not why it failed."""
    missing = [member for member in members if f"tar: {member}: Not found in archive" in str(error)]
    if not missing:
        return None
    return RestoreError(f"not in the backup {name}: {', '.join(missing)}; nothing was restored")


def _unpack(
    reader: IO[bytes],
    passphrase: str | None,
    form: BackupFormat,
    staging: Path,
    sql_name: str,
    members: Sequence[str],
) -> None:
    with ExitStack() as stack:
        sql_file = (
            stack.enter_context(open(staging / sql_name, "wb"))
            if form.source_type is SourceType.DATABASE
            else None
        )
        read_backup(reader, passphrase, unpack_argvs(form, staging, members), sql_file)


def read_backup(
    reader: Readable, passphrase: str | None, argvs: list[list[str]], stdout: IO[bytes] | None
) -> None:
    """Stream a stored backup from `reader` through gpg (when `passphrase` is given) and the
    programs `argvs` into `stdout` (the plaintext itself when there are no programs); a
    RestoreError says what failed."""
    with ExitStack() as stack:
        processes = pipeline(argvs, stdout=stdout)
        for process in processes:
            stack.callback(process.close)

        def feed(chunk: bytes) -> None:
            if processes:
                processes[0].write(chunk)
            else:
                assert stdout is not None
                stdout.write(chunk)

        failure: Exception | None = None
        try:
            if passphrase is not None:
                decrypt_stream(reader, feed, passphrase)
            else:
                while chunk := reader.read(CHUNK_SIZE):
                    feed(chunk)
        except BrokenPipeError:
            pass  # zstd or tar stopped early: their exit status says why
        except Exception as exc:
            failure = exc
        finally:
            if processes:
                processes[0].close_stdin()
        problems = [] if failure is None else [f"decryption: {failure}"]
        problems.extend(str(error) for error in map(Process.failure, processes) if error)
        if problems:
            raise RestoreError("the backup is damaged or incomplete: " + "; ".join(problems))


def stream_plaintext(
    reader: Readable, passphrase: str | None, form: BackupFormat, consume: Callable[[IO[bytes]], _T]
) -> _T:
    """Stream the backup's plaintext (the tar or the dump) into `consume`, which reads it on a
    thread; what it returns. Whatever `consume` leaves unread is drained, so the pipe never
    blocks. RestoreError: the reading path's failure (gpg, zstd) before any of `consume`'s own."""
    read_end, write_end = os.pipe()
    with (
        ThreadPoolExecutor(1, thread_name_prefix="plaintext") as pool,
        open(read_end, "rb") as plaintext,
    ):
        consumed = pool.submit(_drained, plaintext, consume)
        failure: Exception | None = None
        try:
            with open(write_end, "wb") as sink:
                read_backup(reader, passphrase, decompress_argvs(form), sink)
        except (ReconcilerError, OSError) as exc:
            failure = exc
        try:
            result = consumed.result()
        except Exception as exc:
            if failure is not None:
                raise failure from exc
            raise
        if failure is not None:
            raise failure
        return result


def _drained(plaintext: IO[bytes], consume: Callable[[IO[bytes]], _T]) -> _T:
    try:
        return consume(plaintext)
    finally:
        while plaintext.read(CHUNK_SIZE):
            pass


def tar_members(archive: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    """Each member of a tar opened in stream mode (`r|`), in order. tarfile keeps every member it
    has read in a list; this forgets them as it goes, so a tar of millions of files costs the
    memory of one."""
    while (member := archive.next()) is not None:
        archive.members.clear()  # type: ignore[attr-defined]  # undeclared in typeshed
        yield member


def _move_into_place(staging: Path, to: Path) -> Path:
    entries = sorted(staging.iterdir())
    if not entries:
        raise RestoreError("the backup is empty")
    for entry in entries:
        if (to / entry.name).exists():
            raise RestoreError(f"{to / entry.name} already exists: restore into an empty directory")
    for entry in entries:
        entry.rename(to / entry.name)
    return to / entries[0].name
