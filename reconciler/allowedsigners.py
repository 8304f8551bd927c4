"""Reading an SSH allowed-signers file (git's `gpg.ssh.allowedSignersFile`, ssh-keygen's
ALLOWED SIGNERS format) strictly enough to refuse a broken one at start-up.

One signer per line: `principals [options] keytype base64-key [comment]`; blank lines and lines
starting with `#` are skipped. ssh-keygen skips a line it cannot read, so a typo would silently
remove a trusted key (every head it signed refused) or, worse, go unnoticed: here every line must
parse, and its key must decode to the key type it names.
"""

from __future__ import annotations

import base64
import binascii
import struct
from dataclasses import dataclass

from reconciler.types import ReconcilerError

KEY_TYPES = frozenset(
    {
        "ssh-ed25519",
        "ssh-rsa",
        "ssh-dss",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
    }
)
# ssh-keygen's options for a signer; `cert-authority` is a flag, the others take a value.
_FLAG_OPTIONS = frozenset({"cert-authority"})
_VALUE_OPTIONS = frozenset({"namespaces", "valid-after", "valid-before"})


class AllowedSignersError(ReconcilerError):
    """The allowed-signers file cannot be used; the message names the file, the line and why."""


@dataclass(frozen=True, slots=True)
class AllowedSigner:
    """One line of the file: who (principals), under which options, with which public key."""

    line: int
    principals: str
    options: tuple[str, ...]
    key_type: str
    key: str

    @property
    def cert_authority(self) -> bool:
        return "cert-authority" in self.options


def parse_allowed_signers(text: str, path: str) -> tuple[AllowedSigner, ...]:
    """Every signer of the file; AllowedSignersError at the first line that does not parse, or
    when the file lists nobody (every commit would be refused)."""
    signers: list[AllowedSigner] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            signers.append(_signer(number, line))
        except ValueError as exc:
            raise AllowedSignersError(f"{path}:{number}: {exc}") from None
    if not signers:
        raise AllowedSignersError(
            f"{path}: lists no signer, so every commit would be refused; add a line"
            " `PRINCIPAL KEYTYPE KEY` (say, `alice@example.com ssh-ed25519 AAAA...`)"
        )
    return tuple(signers)


def lists_key(signers: tuple[AllowedSigner, ...], key_type: str, key: str) -> bool:
    """Whether a plain (non-certificate-authority) line lists this public key."""
    return any(
        not signer.cert_authority and signer.key_type == key_type and signer.key == key
        for signer in signers
    )


def _signer(number: int, line: str) -> AllowedSigner:
    fields = _fields(line)
    if len(fields) < 3:
        raise ValueError("expected `PRINCIPALS [OPTIONS] KEYTYPE KEY`")
    principals, rest = fields[0], fields[1:]
    options: tuple[str, ...] = ()
    if rest[0] not in KEY_TYPES:
        if len(rest) < 3 or rest[1] not in KEY_TYPES:
            raise ValueError(
                f"no known key type after the principals (one of {', '.join(sorted(KEY_TYPES))})"
            )
        options, rest = _options(rest[0]), rest[1:]
    key_type, key = rest[0], rest[1]
    _check_key(key_type, key)
    return AllowedSigner(number, principals, options, key_type, key)


def _fields(line: str) -> list[str]:
    """Whitespace-separated fields; whitespace inside double quotes belongs to its field."""
    fields: list[str] = []
    current: list[str] = []
    quoted = False
    for char in line:
        if char == '"':
            quoted = not quoted
        if char.isspace() and not quoted:
            if current:
                fields.append("".join(current))
                current = []
            continue
        current.append(char)
    if quoted:
        raise ValueError("a double quote is not closed")
    if current:
        fields.append("".join(current))
    return fields


def _options(field: str) -> tuple[str, ...]:
    options: list[str] = []
    for option in _split_outside_quotes(field):
        name, equals, value = option.partition("=")
        name = name.lower()
        if name in _FLAG_OPTIONS and not equals:
            options.append(name)
        elif name in _VALUE_OPTIONS and equals and value:
            options.append(f"{name}={value}")
        else:
            known = ", ".join(sorted(_FLAG_OPTIONS | {f"{n}=..." for n in _VALUE_OPTIONS}))
            raise ValueError(f"unknown option {option!r} (known: {known})")
    return tuple(options)


def _split_outside_quotes(field: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for char in field:
        if char == '"':
            quoted = not quoted
        if char == "," and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def _check_key(key_type: str, key: str) -> None:
    """The base64 blob must decode, and the key type written inside it must be the one named."""
    try:
        blob = base64.b64decode(key, validate=True)
        (length,) = struct.unpack(">I", blob[:4])
        inner = blob[4 : 4 + length].decode("ascii")
    except (binascii.Error, struct.error, UnicodeDecodeError):
        raise ValueError(f"the {key_type} key is not a valid base64 public key") from None
    if inner != key_type:
        raise ValueError(f"the key is a {inner or 'malformed'} key, not {key_type}")
