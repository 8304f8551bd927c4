from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from reconciler.models import SecretRef
from reconciler.secrets import SecretError, Secrets

VALUE = "s3cr3t-Value-42"


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "secrets.json"


def test_an_env_reference_resolves_to_the_variable(store_path: Path) -> None:
    secrets = Secrets(store_path, {"DB_PASSWORD": VALUE})

    assert secrets.resolve(SecretRef(env="DB_PASSWORD")) == VALUE


def test_a_missing_env_variable_is_named_in_the_error(store_path: Path) -> None:
    secrets = Secrets(store_path, {})

    with pytest.raises(SecretError, match="env:DB_PASSWORD: environment variable DB_PASSWORD"):
        secrets.resolve(SecretRef(env="DB_PASSWORD"))


def test_a_file_reference_resolves_to_its_first_line(tmp_path: Path, store_path: Path) -> None:
    secret_file = tmp_path / "password"
    secret_file.write_text(f"{VALUE}\nsecond line\n")

    assert Secrets(store_path, {}).resolve(SecretRef(file=str(secret_file))) == VALUE


def test_a_file_reference_drops_a_windows_line_ending(tmp_path: Path, store_path: Path) -> None:
    secret_file = tmp_path / "password"
    secret_file.write_bytes(f"{VALUE}\r\n".encode())

    assert Secrets(store_path, {}).resolve(SecretRef(file=str(secret_file))) == VALUE


def test_a_file_reference_keeps_inner_and_trailing_spaces(tmp_path: Path, store_path: Path) -> None:
    secret_file = tmp_path / "password"
    secret_file.write_text(" a b \n")

    assert Secrets(store_path, {}).resolve(SecretRef(file=str(secret_file))) == " a b "


def test_a_file_without_a_newline_is_read_whole(tmp_path: Path, store_path: Path) -> None:
    secret_file = tmp_path / "password"
    secret_file.write_text(VALUE)

    assert Secrets(store_path, {}).resolve(SecretRef(file=str(secret_file))) == VALUE


def test_a_missing_file_is_named_in_the_error(tmp_path: Path, store_path: Path) -> None:
    missing = tmp_path / "nope"

    with pytest.raises(SecretError, match=f"file:{missing}: cannot read the file"):
        Secrets(store_path, {}).resolve(SecretRef(file=str(missing)))


def test_an_unreadable_file_is_an_error(tmp_path: Path, store_path: Path) -> None:
    # A directory is unreadable as a file even for root, which ignores permission bits.
    with pytest.raises(SecretError, match="cannot read the file"):
        Secrets(store_path, {}).resolve(SecretRef(file=str(tmp_path)))


def test_a_file_that_is_not_utf8_is_an_error_without_its_bytes(
    tmp_path: Path, store_path: Path
) -> None:
    secret_file = tmp_path / "password"
    secret_file.write_bytes(b"\xff\xfepass\n")

    with pytest.raises(SecretError, match="not valid UTF-8") as caught:
        Secrets(store_path, {}).resolve(SecretRef(file=str(secret_file)))
    assert "ff" not in str(caught.value)
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__


@pytest.mark.parametrize(
    "ref", [SecretRef(env="EMPTY"), SecretRef(secret="empty"), SecretRef(file="/dev/null")]
)
def test_an_empty_secret_is_an_error(store_path: Path, ref: SecretRef) -> None:
    store_path.parent.mkdir(mode=0o700)
    store_path.write_text('{"empty": ""}')
    store_path.chmod(0o600)

    with pytest.raises(SecretError, match="empty"):
        Secrets(store_path, {"EMPTY": ""}).resolve(ref)


def test_a_stored_secret_resolves_through_its_reference(store_path: Path) -> None:
    secrets = Secrets(store_path, {})

    ref = secrets.put("db.password", VALUE)

    assert ref == SecretRef(secret="db.password")
    assert secrets.resolve(ref) == VALUE
    assert Secrets(store_path, {}).resolve(ref) == VALUE


def test_putting_a_key_again_replaces_its_value(store_path: Path) -> None:
    secrets = Secrets(store_path, {})
    secrets.put("k", "old")
    secrets.put("k", VALUE)

    assert secrets.resolve(SecretRef(secret="k")) == VALUE


def test_the_store_is_created_on_first_put_with_mode_0600(store_path: Path) -> None:
    secrets = Secrets(store_path, {})
    assert not store_path.exists()

    secrets.put("k", VALUE)

    assert stat.S_IMODE(store_path.stat().st_mode) == 0o600


def test_the_store_leaves_no_temporary_files(store_path: Path) -> None:
    secrets = Secrets(store_path, {})
    for i in range(3):
        secrets.put(f"k{i}", VALUE)

    assert os.listdir(store_path.parent) == ["secrets.json"]


def test_a_store_readable_by_others_is_refused(store_path: Path) -> None:
    secrets = Secrets(store_path, {})
    secrets.put("k", VALUE)
    store_path.chmod(0o644)

    with pytest.raises(SecretError, match="chmod 600") as caught:
        secrets.resolve(SecretRef(secret="k"))
    assert VALUE not in str(caught.value)


def test_a_missing_key_is_named_in_the_error(store_path: Path) -> None:
    with pytest.raises(SecretError, match="secret:absent: no such key"):
        Secrets(store_path, {}).resolve(SecretRef(secret="absent"))


def test_a_deleted_key_no_longer_resolves(store_path: Path) -> None:
    secrets = Secrets(store_path, {})
    secrets.put("k", VALUE)
    secrets.put("other", "x")

    secrets.forget(["k", "never-there"])

    with pytest.raises(SecretError, match="no such key"):
        secrets.resolve(SecretRef(secret="k"))
    assert secrets.resolve(SecretRef(secret="other")) == "x"
    assert VALUE not in store_path.read_text()


@pytest.mark.parametrize("key", ["", "has space", "../escape", "x" * 129])
def test_an_invalid_key_is_refused(store_path: Path, key: str) -> None:
    with pytest.raises(SecretError, match="is not valid"):
        Secrets(store_path, {}).put(key, VALUE)
    assert not store_path.exists()


def test_a_corrupt_store_is_an_error_without_its_content(store_path: Path) -> None:
    store_path.parent.mkdir(mode=0o700)
    store_path.write_text('{"k": "' + VALUE)
    store_path.chmod(0o600)

    with pytest.raises(SecretError, match="not valid JSON") as caught:
        Secrets(store_path, {}).resolve(SecretRef(secret="k"))
    assert VALUE not in str(caught.value)
    assert caught.value.__cause__ is None


def test_a_value_never_appears_in_an_error_when_writing_fails(tmp_path: Path) -> None:
    # A legal store name whose temporary sibling is too long for the file system (even for root).
    secrets = Secrets(tmp_path / ("s" * 250), {})

    with pytest.raises(SecretError, match="cannot write it") as caught:
        secrets.put("k", VALUE)
    assert VALUE not in str(caught.value)
    assert VALUE not in repr(caught.value)


def test_concurrent_puts_keep_every_key(store_path: Path) -> None:
    secrets = Secrets(store_path, {})
    threads = [
        threading.Thread(target=secrets.put, args=(f"key{i}", f"value{i}")) for i in range(16)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert all(secrets.resolve(SecretRef(secret=f"key{i}")) == f"value{i}" for i in range(16))
