"""Streaming OpenPGP encryption with the real gpg binary."""

from __future__ import annotations

import io
import os
import subprocess
import time
from pathlib import Path

import pytest

from reconciler.encryption import CHUNK_SIZE, EncryptingWriter, EncryptionError, decrypt_stream

PASSPHRASE = "correct horse battery staple 9f2c"


class MemoryWriter:
    def __init__(self) -> None:
        self.data = io.BytesIO()
        self.state = "open"

    def write(self, chunk: bytes) -> None:
        self.data.write(chunk)

    def commit(self) -> None:
        self.state = "committed"

    def abort(self) -> None:
        self.state = "aborted"


def encrypt(plain: bytes) -> MemoryWriter:
    inner = MemoryWriter()
    writer = EncryptingWriter(inner, PASSPHRASE)
    for start in range(0, len(plain), CHUNK_SIZE):
        writer.write(plain[start : start + CHUNK_SIZE])
    writer.commit()
    return inner


def test_encrypted_data_decrypts_to_the_same_bytes() -> None:
    plain = os.urandom(3 * CHUNK_SIZE + 7)
    inner = encrypt(plain)
    assert inner.state == "committed"
    out: list[bytes] = []
    decrypt_stream(io.BytesIO(inner.data.getvalue()), out.append, PASSPHRASE)
    assert b"".join(out) == plain


def test_a_standard_gpg_command_decrypts_without_this_project(tmp_path: Path) -> None:
    plain = b"hello backup\n" * 1000
    cipher = tmp_path / "backup.tar.zst.gpg"
    cipher.write_bytes(encrypt(plain).data.getvalue())
    (tmp_path / "pass").write_text(PASSPHRASE + "\n")
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    decrypted = subprocess.run(
        ["gpg", "--homedir", str(home), "--batch", "--pinentry-mode", "loopback",
         "--passphrase-file", str(tmp_path / "pass"), "--decrypt", str(cipher)],
        capture_output=True, check=True,
    )  # fmt: skip
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"], check=False)
    assert decrypted.stdout == plain
    assert b"AES256" in decrypted.stderr


def test_a_wrong_passphrase_is_an_error() -> None:
    cipher = encrypt(b"secret data").data.getvalue()
    with pytest.raises(EncryptionError, match="exited with 2"):
        decrypt_stream(io.BytesIO(cipher), lambda chunk: None, "not the passphrase")


def test_tampered_ciphertext_is_detected() -> None:
    cipher = bytearray(encrypt(os.urandom(100_000)).data.getvalue())
    cipher[len(cipher) // 2] ^= 0x01
    with pytest.raises(EncryptionError, match="manipulated"):
        decrypt_stream(io.BytesIO(bytes(cipher)), lambda chunk: None, PASSPHRASE)


def test_abort_aborts_the_destination_writer() -> None:
    inner = MemoryWriter()
    writer = EncryptingWriter(inner, PASSPHRASE)
    writer.write(b"partial")
    writer.abort()
    assert inner.state == "aborted"


def test_the_passphrase_never_appears_in_a_process_list() -> None:
    inner = MemoryWriter()
    writer = EncryptingWriter(inner, PASSPHRASE)
    try:
        writer.write(os.urandom(CHUNK_SIZE))
        # A loaded machine may not have exec'd gpg yet (its child still shows python's argv).
        deadline = time.monotonic() + 30
        seen = _process_lists()
        while not any(b"--symmetric" in blob for blob in seen) and time.monotonic() < deadline:
            time.sleep(0.05)
            seen = _process_lists()
        assert any(b"--symmetric" in cmdline for cmdline in seen)  # gpg is running now
        assert not any(PASSPHRASE.encode() in blob for blob in seen)
    finally:
        writer.abort()


def test_a_multiline_passphrase_is_refused() -> None:
    with pytest.raises(EncryptionError, match="single line"):
        EncryptingWriter(MemoryWriter(), "two\nlines")


def _process_lists() -> list[bytes]:
    """Every process's command line and environment, as /proc shows them now."""
    seen = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                seen.append((entry / "cmdline").read_bytes())
                seen.append((entry / "environ").read_bytes())
            except OSError:
                continue
    return seen
