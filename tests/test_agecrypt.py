"""age-encrypted secret references: the armor's form, the daemon's identity, decrypting and
encrypting in process, checked against the real `age` CLI in both directions."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from reconciler.agecrypt import (
    AgeError,
    decrypt,
    encrypt,
    load_identities,
    reference_text,
)
from reconciler.documents import parse_file
from reconciler.models import SecretRef, check_age_armor
from reconciler.secrets import SecretError, Secrets
from tests import configset
from tests.agekeys import AgeKey, age_decrypt, age_encrypt, age_keygen, indented

SECRET = "correct horse, battery staple"
BEGIN, END = "-----BEGIN AGE ENCRYPTED FILE-----", "-----END AGE ENCRYPTED FILE-----"


@pytest.fixture
def daemon_key(tmp_path: Path) -> AgeKey:
    return age_keygen(tmp_path / "daemon.key")


@pytest.fixture
def other_key(tmp_path: Path) -> AgeKey:
    return age_keygen(tmp_path / "other.key")


def secrets_with(key: AgeKey | None, tmp_path: Path) -> Secrets:
    identities = None if key is None else load_identities(key.identity)
    return Secrets(tmp_path / "secrets.json", {}, identities)


def test_a_reference_made_by_the_age_cli_resolves_to_the_secret(
    daemon_key: AgeKey, tmp_path: Path
) -> None:
    armor = age_encrypt(SECRET.encode(), daemon_key.recipient)

    assert secrets_with(daemon_key, tmp_path).resolve(SecretRef(age=armor)) == SECRET


def test_the_newline_echo_adds_is_not_part_of_the_secret(
    daemon_key: AgeKey, tmp_path: Path
) -> None:
    armor = age_encrypt(f"{SECRET}\n".encode(), daemon_key.recipient)

    assert secrets_with(daemon_key, tmp_path).resolve(SecretRef(age=armor)) == SECRET


def test_encrypted_output_decrypts_with_the_age_cli(daemon_key: AgeKey) -> None:
    armor = encrypt(SECRET, [daemon_key.recipient])

    assert age_decrypt(armor, daemon_key) == SECRET.encode()


def test_every_recipient_given_can_decrypt(daemon_key: AgeKey, other_key: AgeKey) -> None:
    armor = encrypt(SECRET, [daemon_key.recipient, other_key.recipient])

    assert age_decrypt(armor, daemon_key) == age_decrypt(armor, other_key) == SECRET.encode()


def test_the_printed_reference_is_yaml_that_reads_back_as_the_armor(daemon_key: AgeKey) -> None:
    armor = encrypt(SECRET, [daemon_key.recipient])

    assert yaml.safe_load(reference_text(armor)) == {"age": armor}


def test_a_reference_for_another_identity_does_not_resolve(
    daemon_key: AgeKey, other_key: AgeKey, tmp_path: Path
) -> None:
    armor = age_encrypt(SECRET.encode(), other_key.recipient)

    with pytest.raises(SecretError, match="encrypted to other recipients") as raised:
        secrets_with(daemon_key, tmp_path).resolve(SecretRef(age=armor))
    assert SECRET not in str(raised.value)


def test_without_an_identity_an_age_reference_names_the_missing_flag(
    daemon_key: AgeKey, tmp_path: Path
) -> None:
    armor = age_encrypt(SECRET.encode(), daemon_key.recipient)

    with pytest.raises(SecretError, match="--age-identity"):
        secrets_with(None, tmp_path).resolve(SecretRef(age=armor))


def test_a_damaged_ciphertext_does_not_decrypt(daemon_key: AgeKey) -> None:
    armor = age_encrypt(SECRET.encode(), daemon_key.recipient)
    data = bytearray(base64.b64decode("".join(armor.splitlines()[1:-1])))
    data[-1] ^= 1  # the payload's last byte: its authentication tag no longer matches
    damaged = check_age_armor(
        "-----BEGIN AGE ENCRYPTED FILE-----\n"
        + base64.b64encode(bytes(data)).decode()
        + "\n-----END AGE ENCRYPTED FILE-----"
    )

    with pytest.raises(AgeError, match="does not decrypt"):
        decrypt(damaged, load_identities(daemon_key.identity))


def test_a_reference_folded_onto_one_line_is_the_same_armor(daemon_key: AgeKey) -> None:
    armor = age_encrypt(SECRET.encode(), daemon_key.recipient)
    folded = " ".join(armor.splitlines())  # what a YAML flow scalar makes of line breaks

    assert SecretRef(age=folded).age == armor


@given(payload=st.binary(max_size=400), separators=st.lists(st.sampled_from([" ", "\n", "\r\n"])))
def test_any_whitespace_between_armor_lines_canonicalises_to_64_columns(
    payload: bytes, separators: list[str]
) -> None:
    body = base64.b64encode(b"age-encryption.org/v1\n" + payload).decode()
    lines = [body[start : start + 64] for start in range(0, len(body), 64)]
    canonical = "\n".join([BEGIN, *lines, END, ""])
    glue = iter(separators)
    # Split the body at arbitrary places and join with arbitrary whitespace.
    pieces = [body[start : start + 13] for start in range(0, len(body), 13)]
    messy = BEGIN + "\n" + "".join(piece + next(glue, "\n") for piece in pieces) + END

    assert check_age_armor(messy) == canonical


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("s3cr3t in the clear", "must be an armored age file starting with -----BEGIN"),
        ("-----BEGIN AGE ENCRYPTED FILE-----\nYWdl\n", "does not end with -----END"),
        (
            "-----BEGIN AGE ENCRYPTED FILE-----\nnot base64!\n-----END AGE ENCRYPTED FILE-----",
            "not base64",
        ),
        (
            "-----BEGIN AGE ENCRYPTED FILE-----\n"
            + base64.b64encode(b"-----BEGIN PGP MESSAGE-----").decode()
            + "\n-----END AGE ENCRYPTED FILE-----",
            "no age-encryption.org/v1 header",
        ),
    ],
)
def test_malformed_armor_is_a_field_error_on_the_line_of_its_key(value: str, reason: str) -> None:
    text = configset.task(1, encryption_password={"age": value})

    parsed = parse_file("tasks/1.yaml", text.encode())

    (error,) = parsed.errors
    assert error.field == "encryption_password.age"
    assert reason in error.message
    lines = text.splitlines()
    assert error.line == next(n for n, line in enumerate(lines, 1) if line.startswith("  age:"))


def test_a_pasted_reference_under_a_field_parses_to_the_armor(daemon_key: AgeKey) -> None:
    armor = encrypt(SECRET, [daemon_key.recipient])
    text = configset.task(1) + "encryption_password:\n" + indented(reference_text(armor), 2)

    parsed = parse_file("tasks/1.yaml", text.encode())

    assert parsed.ok, parsed.errors
    (task,) = parsed.objects
    assert getattr(task, "encryption_password") == SecretRef(age=armor)  # noqa: B009


def test_a_reference_with_age_and_another_kind_is_refused(daemon_key: AgeKey) -> None:
    armor = encrypt(SECRET, [daemon_key.recipient])

    with pytest.raises(ValueError, match="exactly one of env, file, secret or age"):
        SecretRef.model_validate({"env": "X", "age": armor})


def test_the_armor_stays_out_of_a_references_repr(daemon_key: AgeKey) -> None:
    armor = encrypt(SECRET, [daemon_key.recipient])

    assert "BEGIN" not in repr(SecretRef(age=armor))


def test_an_identity_file_with_a_line_that_is_not_a_key_is_named_with_its_line(
    tmp_path: Path,
) -> None:
    identity = tmp_path / "identity"
    identity.write_text("# created by hand\n\nAGE-PUBLIC-oops-not-a-secret-key\n")

    with pytest.raises(AgeError, match=r"identity, line 3: not an age secret key") as raised:
        load_identities(identity)
    assert "oops" not in str(raised.value)


def test_an_identity_file_without_a_key_is_refused(tmp_path: Path) -> None:
    identity = tmp_path / "identity"
    identity.write_text("# public key: age1xyz\n")

    with pytest.raises(AgeError, match="holds no age secret key"):
        load_identities(identity)


def test_a_missing_identity_file_is_one_sentence(tmp_path: Path) -> None:
    with pytest.raises(AgeError, match="cannot read it"):
        load_identities(tmp_path / "nowhere")


def test_every_key_of_an_identity_file_is_tried(
    daemon_key: AgeKey, other_key: AgeKey, tmp_path: Path
) -> None:
    both = tmp_path / "both.key"
    both.write_text(daemon_key.identity.read_text() + other_key.identity.read_text())
    armor = age_encrypt(SECRET.encode(), other_key.recipient)

    assert decrypt(armor, load_identities(both)) == SECRET


@pytest.mark.parametrize("recipient", ["age1notakey", "AGE-SECRET-KEY-1ABC", "ssh-ed25519 AAAA"])
def test_a_recipient_that_is_not_a_public_key_is_refused(recipient: str) -> None:
    with pytest.raises(AgeError, match="is not an age public key"):
        encrypt(SECRET, [recipient])


def test_an_ssh_public_key_is_a_recipient(tmp_path: Path) -> None:
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    armor = encrypt(SECRET, [(tmp_path / "id_ed25519.pub").read_text()])

    decrypted = subprocess.run(
        ["age", "-d", "-i", str(key)], input=armor.encode(), capture_output=True, check=True
    )
    assert decrypted.stdout == SECRET.encode()
