"""A stored backup's size and SHA-256, computed on the stream as it passes (no second read).

`HashingWriter` sits between the pipeline and the destination writer at backup time, so what it
hashes is exactly what the destination stores (ciphertext when encrypted); `HashingReader` sits
on a destination reader when a backup is verified, so the same bytes are hashed on the way back.
"""

from __future__ import annotations

import hashlib
from typing import Protocol


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class _Writer(Protocol):
    def write(self, chunk: bytes) -> None: ...
    def commit(self) -> None: ...
    def abort(self) -> None: ...


class HashingWriter:
    """A backup writer that counts and hashes every byte it passes on to `inner`."""

    def __init__(self, inner: _Writer) -> None:
        self._inner = inner
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, chunk: bytes) -> None:
        self._inner.write(chunk)
        self._hash.update(chunk)
        self.size += len(chunk)

    def commit(self) -> None:
        self._inner.commit()

    def abort(self) -> None:
        self._inner.abort()

    def sha256(self) -> str:
        return self._hash.hexdigest()


class HashingReader:
    """A reader that counts and hashes every byte read through it from `inner`."""

    def __init__(self, inner: Readable) -> None:
        self._inner = inner
        self._hash = hashlib.sha256()
        self.size = 0

    def read(self, size: int = -1, /) -> bytes:
        chunk = self._inner.read(size)
        self._hash.update(chunk)
        self.size += len(chunk)
        return chunk

    def sha256(self) -> str:
        return self._hash.hexdigest()
