"""Which secrets-store keys the config set still uses, so the API never deletes one in use.

A key is in use while any committed config file names it (`secret: key`), whoever wrote that
file: a person may copy a reference into another task. The scan is textual, over every file of
the head, so a file that does not parse still protects the keys it names.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from reconciler.documents import MAX_FILE_BYTES
from reconciler.gitstore import GitStore
from reconciler.secrets import Secrets

# `secret: key`, flow or block style, the value maybe on the next line or tagged `!!str`.
_REFERENCE = re.compile(rb"secret[\"']?\s*:\s*(?:!!str\s+)?[\"']?([A-Za-z0-9_.-]{1,128})")


def referenced_keys(store: GitStore, revision: str | None) -> set[str]:
    """Blocking: reads every config file of `revision`."""
    if revision is None:
        return set()
    listed = set(store.list_files(revision).values())
    # An oversized file is never applied; reading it whole is what the size limit forbids.
    sizes = store.blob_sizes(listed)
    blobs = store.read_blobs(blob for blob in listed if sizes[blob] <= MAX_FILE_BYTES)
    return {
        match.group(1).decode()
        for content in blobs.values()
        for match in _REFERENCE.finditer(content)
    }


def forget_unreferenced(
    store: GitStore, secrets: Secrets, revision: str | None, keys: Iterable[str] | None = None
) -> list[str]:
    """Delete those of `keys` (None: every stored key) that no file of `revision` names.

    Without a revision (a branch with no commit yet) nothing is known to be unused: nothing is
    deleted.
    """
    candidates = set(secrets.keys() if keys is None else keys)
    if not candidates or revision is None:
        return []
    unused = sorted(candidates - referenced_keys(store, revision))
    secrets.forget(unused)
    return unused
