"""Real age keys and ciphertexts for tests, made with the `age` and `age-keygen` CLIs (never with
the code under test), as a person on a laptop makes them."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class AgeKey:
    identity: Path  # the identity file, as age-keygen writes it
    recipient: str  # its public key, age1...


def age_keygen(path: Path) -> AgeKey:
    subprocess.run(["age-keygen", "-o", str(path)], check=True, capture_output=True)
    public = subprocess.run(
        ["age-keygen", "-y", str(path)], check=True, capture_output=True, text=True
    ).stdout.strip()
    return AgeKey(path, public)


def age_encrypt(plaintext: bytes, *recipients: str) -> str:
    """`age -a -r R...`: the armored ciphertext."""
    argv = ["age", "-a"] + [arg for recipient in recipients for arg in ("-r", recipient)]
    return subprocess.run(argv, input=plaintext, check=True, capture_output=True).stdout.decode()


def age_decrypt(armor: str, key: AgeKey) -> bytes:
    """`age -d -i IDENTITY`: the plaintext."""
    return subprocess.run(
        ["age", "-d", "-i", str(key.identity)],
        input=armor.encode(),
        check=True,
        capture_output=True,
    ).stdout


def indented(text: str, spaces: int) -> str:
    return "".join(" " * spaces + line + "\n" for line in text.splitlines())
