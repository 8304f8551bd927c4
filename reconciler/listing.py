"""`reconciler ls`: the files in a files backup, read from its destination, written nowhere.

The backup goes through restore's reading path (restore.stream_plaintext: gpg, `zstd -d`) into
Python's tarfile in stream mode, and each member is handed on as soon as it is read: a tar of a
hundred thousand files is never held in memory, and the first lines show before the last member
arrives.

The text format has fixed columns, so both people and `cut -c`/`awk` read it: the entry type
(`file`, `dir`, `link`, `hardlink`, `other`) in 8 columns, the size in bytes right-aligned in 15,
the modification time in UTC (`2026-11-30T02:00:05Z`), then the path, each separated by two
spaces; a link adds ` -> TARGET`. Control characters and backslashes in names are escaped
(`\\n`, `\\x1b`, `\\u2028`, `\\\\`) so that one line is one entry. `--json` prints one JSON
object a line.
"""

from __future__ import annotations

import json
import tarfile
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from reconciler.destinations import open_destination
from reconciler.models import ResolvedTask, SourceType
from reconciler.restore import (
    RestoreError,
    choose_backup,
    reading_keys,
    stream_plaintext,
    tar_members,
)
from reconciler.secrets import Secrets
from reconciler.state.runs import RunRecord

_KINDS = (
    (tarfile.TarInfo.isdir, "dir"),
    (tarfile.TarInfo.issym, "link"),
    (tarfile.TarInfo.islnk, "hardlink"),
    (tarfile.TarInfo.isfile, "file"),
)
# Control characters and the line and paragraph separators: a terminal or `splitlines` acts on them.
_UNPRINTED = frozenset({"Cc", "Zl", "Zp"})
_ESCAPES = {ord("\\"): "\\\\", ord("\n"): "\\n", ord("\t"): "\\t", ord("\r"): "\\r"}


@dataclass(frozen=True, slots=True)
class Entry:
    """One member of a files backup: its path as the tar names it (a folder's without the
    trailing slash), what it is, its size in bytes (0 but for files) and its modification time."""

    path: str
    kind: str
    size: int
    mtime: datetime
    link: str | None  # a link's target; None for everything else

    def line(self) -> str:
        """The entry in `reconciler ls`'s text format (the module's docstring describes it)."""
        mtime = self.mtime.strftime("%Y-%m-%dT%H:%M:%SZ")
        text = f"{self.kind:<8}  {self.size:>15}  {mtime}  {_printable(self.path)}"
        return text if self.link is None else f"{text} -> {_printable(self.link)}"

    def json(self) -> str:
        """The entry as one JSON object (`reconciler ls --json`)."""
        return json.dumps(
            {
                "path": self.path,
                "type": self.kind,
                "size": self.size,
                "mtime": self.mtime.isoformat().replace("+00:00", "Z"),
                "link": self.link,
            }
        )


def entry_of(member: tarfile.TarInfo) -> Entry:
    """What `ls` says of one tar member."""
    kind = next((name for test, name in _KINDS if test(member)), "other")
    return Entry(
        path=member.name.rstrip("/") or member.name,
        kind=kind,
        size=member.size if kind == "file" else 0,
        mtime=datetime.fromtimestamp(member.mtime, UTC),
        link=member.linkname if member.issym() or member.islnk() else None,
    )


def list_backup(
    task: ResolvedTask,
    run: RunRecord | None,
    *,
    emit: Callable[[Entry], None],
    secrets: Secrets,
    known_hosts: Path | None = None,
) -> str:
    """Hand `emit` every entry of the run's backup (default: the task's newest on its destination,
    as restore chooses), in the tar's order; returns the backup's name. RestoreError when the task
    is not a files task, or the backup cannot be read to its end."""
    if task.task.source.type is not SourceType.FILES:
        raise RestoreError(
            f"ls lists the files of a files backup; task {task.id} backs up a database "
            "(reconciler restore writes its .sql file)"
        )
    store = open_destination(task.destination, secrets.resolve, known_hosts=known_hosts)
    try:
        directory = task.task.storage.path
        name = choose_backup(task, run, [b.name for b in store.list_backups(directory)])
        form, passphrase = reading_keys(task, name, secrets)

        def consume(plaintext: IO[bytes]) -> None:
            try:
                with tarfile.open(fileobj=plaintext, mode="r|") as archive:
                    for member in tar_members(archive):
                        emit(entry_of(member))
            except tarfile.TarError as exc:
                raise RestoreError(f"the backup is damaged or incomplete: tar: {exc}") from exc

        with store.open_reader(directory, name) as reader:
            stream_plaintext(reader, passphrase, form, consume)
        return name
    finally:
        store.close()


def _printable(text: str) -> str:
    # Almost every name needs no escape; str.isprintable is stricter than the escaping rules (it
    # also refuses tabs, surrogates and the unprinted categories), so it alone proves that.
    if text.isprintable() and "\\" not in text:
        return text
    return "".join(map(_printable_char, text))


def _printable_char(char: str) -> str:
    code = ord(char)
    if code in _ESCAPES:
        return _ESCAPES[code]
    if 0xDC80 <= code <= 0xDCFF:  # a byte of a name that is not UTF-8 (surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    if unicodedata.category(char) in _UNPRINTED:
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
    return char
