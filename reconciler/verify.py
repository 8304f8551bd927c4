"""`reconciler verify`: prove a stored backup restorable without writing it anywhere.

The backup is streamed from its destination once: its bytes are hashed on the way in (and
compared with the SHA-256 and size its run recorded), then go through restore's reading path
(gpg, `zstd -d`, restore.stream_plaintext) into a pipe, where a thread reads the plaintext:
every tar member to its end (Python's tarfile in stream mode), and the same completeness check a
run applies before storing (the tar's end-of-archive marker, a dump's closing comment). Nothing is
written to disk.
"""

from __future__ import annotations

import tarfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import IO

from reconciler.checksum import HashingReader
from reconciler.commands import BackupFormat
from reconciler.completeness import CompletenessCheck, check_for
from reconciler.destinations import DestinationError, DestinationStore, open_destination
from reconciler.destinations.restic import ResticStore
from reconciler.encryption import CHUNK_SIZE
from reconciler.models import ResolvedTask, SourceType
from reconciler.repolocks import RepositoryLocks
from reconciler.restore import (
    choose_backup,
    reading_keys,
    stream_plaintext,
    tar_members,
)
from reconciler.secrets import Secrets
from reconciler.state.runs import RunRecord, Runs
from reconciler.types import ReconcilerError, RunStatus

_PAGE = 100
RESTIC_CHECK_SUBSET = "10%"  # of the repository's packs, at random: the dump reads the rest


@dataclass(frozen=True, slots=True)
class Verification:
    """What `verify` found: `problems` is empty when the backup was proven restorable."""

    task_id: int
    name: str
    size: int
    files: int | None  # regular files in a files backup; None for a dump
    checksum_recorded: bool
    problems: tuple[str, ...]

    def summary(self) -> str:
        """The one line `reconciler verify` prints."""
        if self.problems:
            return f"{self.name} of task {self.task_id} failed verification: " + "; ".join(
                self.problems
            )
        content = "dump complete" if self.files is None else f"{self.files} files"
        checksum = "sha256 ok" if self.checksum_recorded else "no sha256 recorded to compare"
        return (
            f"verified {self.name} of task {self.task_id}: {content}, "
            f"{self.size / 1e6:,.1f} MB, {checksum}"
        )


def newest_verifiable_run(runs: Runs, task_id: int) -> RunRecord | None:
    """The task's newest successful run that stored a backup."""
    offset = 0
    while True:
        page, total = runs.page(task_id, offset, _PAGE)
        for run in page:
            if run.status is RunStatus.SUCCESSFUL and run.backup_name is not None:
                return run
        offset += len(page)
        if not page or offset >= total:
            return None


def verify(
    task: ResolvedTask,
    run: RunRecord,
    *,
    secrets: Secrets,
    known_hosts: Path | None = None,
    repository_locks: RepositoryLocks | None = None,
) -> Verification:
    """Fetch the run's backup and read it through as a restore would; RestoreError (or a
    destination's error) when there is no backup to read. `repository_locks` are the daemon's
    (a drill's restic check waits for the repository's backups)."""
    store = open_destination(
        task.destination,
        secrets.resolve,
        known_hosts=known_hosts,
        repository_locks=repository_locks,
    )
    try:
        directory = task.task.storage.path
        name = choose_backup(task, run, [b.name for b in store.list_backups(directory)])
        form, passphrase = reading_keys(task, name, secrets)
        problems = _repository_problems(store)
        reader: HashingReader | None = None
        files: int | None = None
        try:
            with store.open_reader(directory, name) as stored:
                reader = HashingReader(stored)
                files, read_problems = _read_through(reader, passphrase, form)
        except DestinationError as exc:
            if reader is None:  # nothing was read: there is no backup to verify
                raise
            read_problems = [str(exc)]  # the store's reader failed once the stream was read
        problems += read_problems
    finally:
        store.close()
    assert reader is not None  # a failure before the reader existed was raised above
    checksum: list[str] = []
    if run.sha256 is not None and (reader.sha256(), reader.size) != (run.sha256, run.size):
        checksum.append(
            f"the stored file ({reader.size} bytes, sha256 {reader.sha256()}) is not what run"
            f" {run.id} recorded ({run.size} bytes, sha256 {run.sha256})"
        )
    return Verification(
        task_id=task.id,
        name=name,
        size=reader.size,
        files=files,
        checksum_recorded=run.sha256 is not None,
        problems=tuple(checksum + problems),
    )


def _repository_problems(store: DestinationStore) -> list[str]:
    """What the repository's own check finds: a restic repository checks a subset of its data
    (`restic check --read-data-subset`); other stores have no such check."""
    if not isinstance(store, ResticStore):
        return []
    try:
        store.check(RESTIC_CHECK_SUBSET)
    except DestinationError as exc:
        return [str(exc)]
    return []


def _read_through(
    reader: HashingReader, passphrase: str | None, form: BackupFormat
) -> tuple[int | None, list[str]]:
    """Stream the backup through restore's reading path into `_inspect`; returns the files
    counted and what failed."""
    try:
        files, problem = stream_plaintext(
            reader, passphrase, form, partial(_inspect, source_type=form.source_type)
        )
    except (ReconcilerError, OSError) as exc:
        return None, [str(exc)]
    finally:
        while reader.read(CHUNK_SIZE):  # the rest is hashed too, whatever failed
            pass
    return files, [] if problem is None else [f"the backup is damaged or incomplete: {problem}"]


class _Checked:
    """A reader that shows every byte it passes to a completeness check."""

    def __init__(self, inner: IO[bytes], check: CompletenessCheck) -> None:
        self._inner = inner
        self._check = check

    def read(self, size: int = -1) -> bytes:
        chunk = self._inner.read(size)
        self._check.feed(chunk)
        return chunk


def _inspect(plaintext: IO[bytes], source_type: SourceType) -> tuple[int | None, str | None]:
    """Read a backup's plaintext to its end: the files it holds (None for a dump) and why it is
    not complete (None: it is). Always reads to the end of the pipe, so the writer never blocks."""
    check = check_for(source_type)
    checked = _Checked(plaintext, check)
    files: int | None = None
    problem: str | None = None
    try:
        if source_type is SourceType.FILES:
            files = _read_members(checked)
    except Exception as exc:  # whatever damaged data makes tarfile raise, it is the finding
        problem = f"tar: {exc or type(exc).__name__}"
    finally:
        while checked.read(CHUNK_SIZE):
            pass
    return files, problem or check.problem()


def _read_members(source: _Checked) -> int:
    """Read every member of the tar stream to its end; returns how many regular files it has."""
    files = 0
    with tarfile.open(fileobj=source, mode="r|") as archive:  # type: ignore[call-overload]
        for member in tar_members(archive):
            if member.isfile():
                data = archive.extractfile(member)
                assert data is not None
                while data.read(CHUNK_SIZE):
                    pass
                files += 1
    return files
