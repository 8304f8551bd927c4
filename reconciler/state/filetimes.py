"""The file-time index (observed from git, rebuilt from it when missing): the interface every
state backend implements, and its record."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True)
class IndexedFileTimes:
    """One file's row in the file-time index; `present`: the path is in the indexed revision
    (rows of deleted paths keep their creation time, as git log does)."""

    created: datetime
    updated: datetime
    present: bool


class StoredFileTimes(Protocol):
    def file_times_revision(self) -> str | None:
        """The commit the file-time index describes; None while there is no index."""
        ...

    def indexed_file_times(
        self, paths: Iterable[str]
    ) -> tuple[str | None, dict[str, IndexedFileTimes]]:
        """The index's revision and its rows for `paths`, from one snapshot."""
        ...

    def rebuild_file_times(self, revision: str, rows: Mapping[str, IndexedFileTimes]) -> None:
        """Replace the whole index with `rows`, describing `revision`."""
        ...

    def advance_file_times(
        self, since: str, revision: str, rows: Mapping[str, IndexedFileTimes]
    ) -> bool:
        """Move the index from `since` to `revision`, upserting `rows`; False (and nothing
        written) when the index no longer describes `since` (another process moved it)."""
        ...
