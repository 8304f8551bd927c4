"""New task ids: above every id the branch ever held, so no id is ever handed out twice.

The history of the branch is the record (the state store can be deleted; git is the config).
Every task file a commit ever added or changed counts, by the id its name starts with and the
top-level `id:` it declared, so a task deleted long ago still holds its id.
"""

from __future__ import annotations

import re
import threading

from reconciler import documents
from reconciler.gitstore import GitStore

_FILE_ID = re.compile(r"^([0-9]{1,15})(?:\D|$)")
# Block-style `id: 47` at the top level (decimal, 0x hex or 0o octal, as YAML 1.2 reads them), as
# the API and people write task files; a flow-style file is still counted by its name and, while
# it is applied, by the desired state.
_DECLARED_ID = re.compile(
    rb"^id:[ \t]*['\"]?(0x[0-9a-fA-F]{1,13}|0o[0-7]{1,17}|[0-9]{1,15})['\"]?[ \t]*(?:#.*)?$",
    re.MULTILINE,
)
# Blobs are read this many at a time, so the first walk of a long history stays small in memory.
_BATCH = 256


class TaskIds:
    """The highest task id in the branch's history, walked once and then per new commit."""

    def __init__(self, store: GitStore) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._walked: str | None = None
        self._highest = 0

    def highest_ever(self, revision: str | None) -> int:
        """Blocking (walks git history): call it from a worker thread."""
        if revision is None:
            return self._highest
        with self._lock:
            added, self._walked = self._store.files_added(revision, self._walked)
            tasks = {
                path: blobs
                for path, blobs in added.items()
                if documents.kind_of(path) is documents.Kind.TASK
            }
            ids = [self._highest]
            ids.extend(
                int(match.group(1))
                for path in tasks
                if (match := _FILE_ID.match(path.rsplit("/", 1)[-1]))
            )
            ids.extend(
                self._declared_ids(sorted({blob for blobs in tasks.values() for blob in blobs}))
            )
            self._highest = max(ids)
            return self._highest

    def _declared_ids(self, blobs: list[str]) -> list[int]:
        found: list[int] = []
        for start in range(0, len(blobs), _BATCH):
            batch = blobs[start : start + _BATCH]
            sizes = self._store.blob_sizes(batch)
            readable = [blob for blob in batch if sizes[blob] <= documents.MAX_FILE_BYTES]
            for content in self._store.read_blobs(readable).values():
                found.extend(_number(match.group(1)) for match in _DECLARED_ID.finditer(content))
        return found


def _number(text: bytes) -> int:
    if text.startswith(b"0x"):
        return int(text[2:], 16)
    if text.startswith(b"0o"):
        return int(text[2:], 8)
    return int(text)
