"""age encryption of secrets, in process (pyrage): the daemon's identity, decrypting, encrypting.

The format is age's own armored file, so `age -a -r KEY` on a laptop makes a reference the daemon
decrypts and `age -d -i KEY` reads one `reconciler secret encrypt` made. Plaintext never appears
in an error message or a repr: errors say why, and pyrage's own messages are about keys and
headers, never content.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyrage
from pyrage import ssh, x25519

from reconciler.types import ReconcilerError

# An identity file holds a few keys and comments; anything bigger is the wrong file.
_MAX_IDENTITY_FILE = 64 * 1024
# What a secret may be, as `file:` references allow: a password or a token, not a payload.
MAX_SECRET_BYTES = 64 * 1024
_X25519_PREFIX = "AGE-SECRET-KEY-1"


class AgeError(ReconcilerError):
    """An identity, recipient or ciphertext that cannot be used; says why, never a value."""


@dataclass(frozen=True)
class AgeIdentities:
    """The daemon's age identities (X25519 keys as `age-keygen` writes them), and where from."""

    source: Path
    keys: Sequence[x25519.Identity] = field(repr=False)


def load_identities(path: Path) -> AgeIdentities:
    """The keys of an identity file: `AGE-SECRET-KEY-1...` lines; `#` comments and blank lines
    are skipped, as age does. Raises AgeError naming the file (and line), never a key."""
    try:
        with path.open("rb") as handle:
            raw = handle.read(_MAX_IDENTITY_FILE + 1)
    except OSError as exc:
        raise AgeError(f"age identity file {path}: cannot read it ({exc.strerror})") from None
    if len(raw) > _MAX_IDENTITY_FILE:
        raise AgeError(f"age identity file {path}: larger than {_MAX_IDENTITY_FILE} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise AgeError(f"age identity file {path}: not UTF-8 text") from None
    keys: list[x25519.Identity] = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not line.startswith(_X25519_PREFIX):
            raise AgeError(
                f"age identity file {path}, line {number}: not an age secret key (expected"
                f" {_X25519_PREFIX}..., as age-keygen writes it)"
            )
        try:
            keys.append(x25519.Identity.from_str(line))
        except pyrage.IdentityError:
            raise AgeError(
                f"age identity file {path}, line {number}: the age secret key is malformed"
            ) from None
    if not keys:
        raise AgeError(f"age identity file {path}: holds no age secret key (AGE-SECRET-KEY-1...)")
    return AgeIdentities(path, tuple(keys))


def decrypt(armor: str, identities: AgeIdentities) -> str:
    """The secret an armored age file holds: UTF-8 text, one trailing newline dropped (so
    `echo pw | age -a -r KEY` works as `printf pw | ...` does)."""
    try:
        plaintext = pyrage.decrypt(armor.encode("ascii"), list(identities.keys))
    except pyrage.DecryptError as exc:
        reason = str(exc)
        if "no matching keys" in reason.lower():
            raise AgeError(
                "does not decrypt with the daemon's age identity: it was encrypted to other"
                " recipients (encrypt it to the daemon's public key)"
            ) from None
        raise AgeError(f"does not decrypt: {reason[:200]}") from None
    except UnicodeEncodeError:
        raise AgeError("does not decrypt: the armor is not ASCII") from None
    if len(plaintext) > MAX_SECRET_BYTES:
        raise AgeError(f"decrypts to more than {MAX_SECRET_BYTES} bytes, too long for a secret")
    try:
        text = plaintext.decode("utf-8")
    except UnicodeDecodeError:
        raise AgeError("decrypts to bytes that are not UTF-8 text") from None
    return text.removesuffix("\n").removesuffix("\r")


def parse_recipient(text: str) -> x25519.Recipient | ssh.Recipient:
    """An age public key (`age1...`) or an SSH public key (`ssh-ed25519 ...`, `ssh-rsa ...`)."""
    text = text.strip()
    try:
        if text.startswith("age1"):
            return x25519.Recipient.from_str(text)
        if text.startswith("ssh-"):
            return ssh.Recipient.from_str(text)
    except pyrage.RecipientError:
        pass
    shown = text if len(text) <= 80 else f"{text[:77]}..."
    raise AgeError(
        f"recipient {shown!r} is not an age public key (age1..., as age-keygen prints it) or an"
        " SSH public key (ssh-ed25519 ...)"
    )


def encrypt(secret: str, recipients: Sequence[str]) -> str:
    """`secret` as an armored age file that any of `recipients` decrypts."""
    if not recipients:
        raise AgeError("at least one recipient is needed")
    parsed = [parse_recipient(recipient) for recipient in recipients]
    data = secret.encode("utf-8")
    if not data:
        raise AgeError("the secret is empty")
    if len(data) > MAX_SECRET_BYTES:
        raise AgeError(f"the secret is longer than {MAX_SECRET_BYTES} bytes")
    try:
        armored = pyrage.encrypt(data, parsed, armored=True)
    except pyrage.EncryptError as exc:
        raise AgeError(f"cannot encrypt: {str(exc)[:200]}") from None
    return armored.decode("ascii")


def encrypt_to_identities(secret: str, identities: AgeIdentities) -> str:
    """`secret` encrypted to the public keys of `identities`, so that they alone decrypt it."""
    return encrypt(secret, [str(key.to_public()) for key in identities.keys])


def reference_text(armor: str) -> str:
    """The secret reference to paste into YAML: `age:` and the armor as a literal block scalar,
    which YAML reads back exactly (a flow scalar would fold its line breaks)."""
    lines = armor.strip().splitlines()
    return "age: |\n" + "".join(f"  {line}\n" for line in lines)
