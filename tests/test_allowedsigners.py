"""Reading an allowed-signers file strictly: every line parses, or the daemon does not start."""

from __future__ import annotations

import base64
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.allowedsigners import (
    AllowedSignersError,
    lists_key,
    parse_allowed_signers,
)


def _key(key_type: str = "ssh-ed25519", payload: bytes = b"\x01" * 32) -> str:
    """A public key blob as OpenSSH writes it: the type's name, then the key material."""
    name = key_type.encode()
    blob = struct.pack(">I", len(name)) + name + struct.pack(">I", len(payload)) + payload
    return base64.b64encode(blob).decode()


KEY = _key()


def test_a_plain_line_names_its_principals_key_type_and_key() -> None:
    [signer] = parse_allowed_signers(f"alice@example.com ssh-ed25519 {KEY} laptop\n", "f")
    assert (signer.line, signer.principals, signer.key_type, signer.key) == (
        1,
        "alice@example.com",
        "ssh-ed25519",
        KEY,
    )
    assert signer.options == ()


def test_options_with_quoted_values_are_read() -> None:
    text = f'ops@example.com namespaces="git,file",valid-after="20260101" ssh-ed25519 {KEY}\n'
    [signer] = parse_allowed_signers(text, "f")
    assert signer.options == ('namespaces="git,file"', 'valid-after="20260101"')


def test_comments_and_blank_lines_are_skipped_and_lines_keep_their_numbers() -> None:
    text = f"# the team\n\n  \nalice ssh-ed25519 {KEY}\n"
    [signer] = parse_allowed_signers(text, "f")
    assert signer.line == 4


def test_a_line_without_a_key_is_refused_with_its_line() -> None:
    with pytest.raises(AllowedSignersError, match=r"^signers:2: expected"):
        parse_allowed_signers(f"alice ssh-ed25519 {KEY}\nbob ssh-ed25519\n", "signers")


def test_an_unknown_key_type_is_refused() -> None:
    with pytest.raises(AllowedSignersError, match=r"^f:1: no known key type"):
        parse_allowed_signers(f"alice ssh-foo {KEY}\n", "f")


def test_an_unknown_option_is_refused() -> None:
    with pytest.raises(AllowedSignersError, match=r"^f:1: unknown option 'no-touch-required'"):
        parse_allowed_signers(f"alice no-touch-required ssh-ed25519 {KEY}\n", "f")


def test_a_key_that_is_not_base64_is_refused() -> None:
    with pytest.raises(AllowedSignersError, match="not a valid base64 public key"):
        parse_allowed_signers("alice ssh-ed25519 not!base64\n", "f")


def test_a_key_of_another_type_than_named_is_refused() -> None:
    with pytest.raises(AllowedSignersError, match="the key is a ssh-rsa key, not ssh-ed25519"):
        parse_allowed_signers(f"alice ssh-ed25519 {_key('ssh-rsa')}\n", "f")


def test_an_unclosed_quote_is_refused() -> None:
    with pytest.raises(AllowedSignersError, match="a double quote is not closed"):
        parse_allowed_signers(f'"alice ssh-ed25519 {KEY}\n', "f")


def test_a_file_that_lists_nobody_is_refused() -> None:
    with pytest.raises(AllowedSignersError, match="lists no signer, so every commit"):
        parse_allowed_signers("# nobody yet\n", "f")


def test_a_certificate_authority_line_does_not_list_its_key_as_a_signer() -> None:
    signers = parse_allowed_signers(f"*@example.com cert-authority ssh-ed25519 {KEY}\n", "f")
    assert signers[0].cert_authority
    assert not lists_key(signers, "ssh-ed25519", KEY)


_principal = st.text(
    alphabet=st.characters(min_codepoint=33, max_codepoint=126, exclude_characters='"#'),
    min_size=1,
    max_size=40,
)


@given(principals=st.lists(_principal, min_size=1, max_size=5), payload=st.binary(max_size=64))
def test_any_line_of_principals_and_a_key_parses_back_to_them(
    principals: list[str], payload: bytes
) -> None:
    key = _key("ssh-ed25519", payload)
    text = "".join(f"{p} ssh-ed25519 {key}\n" for p in principals)
    parsed = parse_allowed_signers(text, "f")
    assert [signer.principals for signer in parsed] == principals
    assert lists_key(parsed, "ssh-ed25519", key)
