"""Turning a SecretRef into its value, and the daemon's own secrets store (written by the API).

Values never appear in an error message, a repr or a log line: errors name the reference and the
reason only, and exceptions from lower layers (which may quote file content) are not chained.
An `age` reference is decrypted in memory each time it is resolved, and `vet` decrypts every one
a config file holds when the reconcile reads the file (the value is dropped at once), so one that
does not decrypt is a config error with its line, not a surprise at 3 a.m.
"""

from __future__ import annotations

import json
import os
import stat
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Protocol

from reconciler.agecrypt import AgeError, AgeIdentities, decrypt, encrypt_to_identities
from reconciler.atomicfile import write_atomically
from reconciler.documents import ParsedFile, Problem, failed_with
from reconciler.models import SecretRef, secret_references
from reconciler.types import ReconcilerError, SecretRows

# A secret is a password or a token: anything bigger is the wrong file.
_MAX_LINE = 64 * 1024


class SecretError(ReconcilerError):
    """A secret cannot be resolved or stored; says which reference and why, never the value."""


_NO_IDENTITY = (
    "cannot be decrypted: the daemon was given no age identity (reconciler serve --age-identity"
    " FILE, or RECONCILER_AGE_IDENTITY)"
)


def describe(ref: SecretRef) -> str:
    """`env:NAME`, `file:/path`, `secret:key` or `age`: how errors and logs name a reference."""
    if ref.env is not None:
        return f"env:{ref.env}"
    if ref.file is not None:
        return f"file:{ref.file}"
    if ref.age is not None:
        return "age-encrypted secret"
    return f"secret:{ref.secret}"


class Secrets:
    def __init__(
        self,
        store: Path | SecretRows,
        environ: Mapping[str, str],
        age_identities: AgeIdentities | None = None,
    ) -> None:
        """`store`: where API-sent secrets live, the JSON file beside an SQLite state store or
        a PostgreSQL store's rows (age-encrypted to `age_identities`)."""
        self._vault: _Vault = (
            _FileVault(Path(store))
            if isinstance(store, Path)
            else _RowsVault(store, age_identities)
        )
        self._environ = environ
        self._age_identities = age_identities

    def resolve(self, ref: SecretRef) -> str:
        if ref.env is not None:
            value = self._environ.get(ref.env)
            if value is None:
                raise SecretError(f"{describe(ref)}: environment variable {ref.env} is not set")
        elif ref.file is not None:
            value = _first_line(ref)
        elif ref.age is not None:
            try:
                value = self._decrypted(ref.age)
            except AgeError as exc:
                raise SecretError(f"{describe(ref)}: {exc}") from None
        else:
            assert ref.secret is not None
            found = self._vault.get(ref.secret)
            if found is None:
                raise SecretError(
                    f"{describe(ref)}: no such key in the secrets store {self._vault.where()}"
                )
            value = found
        if value == "":
            raise SecretError(f"{describe(ref)}: the secret is empty")
        return value

    def vet(self, parsed: ParsedFile) -> ParsedFile:
        """`parsed` as the reconcile applies it: a file with an `age` reference that does not
        decrypt (or decrypts to nothing) becomes a file with errors at those references' lines,
        so its last good version stays in force. Blocking (CPU): run off the event loop."""
        problems: list[Problem] = []
        for document in parsed.objects:
            for location, ref in secret_references(document):
                if ref.age is None:
                    continue
                try:
                    value = self._decrypted(ref.age)
                except AgeError as exc:
                    problems.append(((*location, "age"), f"the age-encrypted secret {exc}"))
                    continue
                if value == "":
                    problems.append(
                        ((*location, "age"), "the age-encrypted secret decrypts to nothing")
                    )
        return failed_with(parsed, problems) if problems else parsed

    def _decrypted(self, armor: str) -> str:
        if self._age_identities is None:
            raise AgeError(_NO_IDENTITY)
        return decrypt(armor, self._age_identities)

    def put(self, key: str, value: str) -> SecretRef:
        """Store `value` under `key` (replacing any old value); the reference to put in YAML."""
        try:
            ref = SecretRef(secret=key)
        except ValueError:
            raise SecretError(
                f"secret key {key!r} is not valid: use 1 to 128 letters, digits, '_', '.' or '-'"
            ) from None
        if not isinstance(value, str) or value == "":
            raise SecretError(f"{describe(ref)}: the value must be a non-empty string")
        self._vault.put(key, value)
        return ref

    def keys(self) -> set[str]:
        return self._vault.keys()

    def forget(self, keys: Iterable[str]) -> None:
        """Delete `keys`; a key that is not there is not an error (goal reached)."""
        self._vault.forget(keys)


class _Vault(Protocol):
    def get(self, key: str) -> str | None: ...

    def keys(self) -> set[str]: ...

    def put(self, key: str, value: str) -> None: ...

    def forget(self, keys: Iterable[str]) -> None: ...

    def where(self) -> str: ...


class _RowsVault:
    """API-sent secrets in a shared state store, each age-encrypted to the daemon's identity:
    the database alone reveals none of them, and every node holding the identity reads them."""

    def __init__(self, rows: SecretRows, identities: AgeIdentities | None) -> None:
        self._rows = rows
        self._identities = identities

    def get(self, key: str) -> str | None:
        armor = self._rows.armor(key)
        if armor is None:
            return None
        try:
            return decrypt(armor, self._needed())
        except AgeError as exc:
            raise SecretError(f"secret {key!r} in {self.where()}: {exc}") from None

    def keys(self) -> set[str]:
        return self._rows.keys()

    def put(self, key: str, value: str) -> None:
        try:
            armor = encrypt_to_identities(value, self._needed())
        except AgeError as exc:
            raise SecretError(f"secret {key!r}: {exc}") from None
        self._rows.put(key, armor)

    def forget(self, keys: Iterable[str]) -> None:
        self._rows.forget(keys)

    def where(self) -> str:
        return self._rows.describe()

    def _needed(self) -> AgeIdentities:
        if self._identities is None:
            raise SecretError(
                f"API secrets in {self.where()} are age-encrypted to the daemon's identity:"
                " start it with --age-identity (the same file on every node)"
            )
        return self._identities


class _FileVault:
    """API-sent secrets in one JSON file (mode 0600) beside an SQLite state store."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()

    def get(self, key: str) -> str | None:
        with self._lock:
            return self._load().get(key)

    def keys(self) -> set[str]:
        with self._lock:
            return set(self._load())

    def put(self, key: str, value: str) -> None:
        with self._lock:
            store = self._load()
            store[key] = value
            self._save(store)

    def forget(self, keys: Iterable[str]) -> None:
        """Delete `keys` in one rewrite."""
        with self._lock:
            store = self._load()
            removed = [key for key in keys if store.pop(key, None) is not None]
            if removed:
                self._save(store)

    def where(self) -> str:
        return str(self._path)

    def _load(self) -> dict[str, str]:
        path = self._path
        try:
            with path.open("rb") as handle:
                mode = os.fstat(handle.fileno()).st_mode
                raw = handle.read()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise SecretError(f"secrets store {path}: cannot read it ({exc.strerror})") from None
        if stat.S_IMODE(mode) & 0o077:
            raise SecretError(
                f"secrets store {path}: mode {stat.S_IMODE(mode):04o} lets other users read it; "
                f"run chmod 600 {path}"
            )
        try:
            store = json.loads(raw)
        except ValueError:
            raise SecretError(f"secrets store {path}: not valid JSON") from None
        if not isinstance(store, dict) or not all(
            isinstance(key, str) and isinstance(value, str) for key, value in store.items()
        ):
            raise SecretError(f"secrets store {path}: must be a JSON object of strings")
        return store

    def _save(self, store: dict[str, str]) -> None:
        """Replace the store atomically: a crash leaves the old file or the new one, never half."""
        path = self._path
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            # 0600 from creation on: the values are never readable by others, even briefly.
            content = json.dumps(store, indent=2, sort_keys=True).encode()
            write_atomically(path, content, 0o600)
        except OSError as exc:
            raise SecretError(f"secrets store {path}: cannot write it ({exc.strerror})") from None


def _first_line(ref: SecretRef) -> str:
    assert ref.file is not None
    try:
        with open(ref.file, "rb") as handle:
            line = handle.readline(_MAX_LINE + 1)
    except OSError as exc:
        raise SecretError(f"{describe(ref)}: cannot read the file ({exc.strerror})") from None
    if len(line) > _MAX_LINE:
        raise SecretError(f"{describe(ref)}: the first line is longer than {_MAX_LINE} bytes")
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise SecretError(f"{describe(ref)}: the first line is not valid UTF-8") from None
    return text.removesuffix("\n").removesuffix("\r")
