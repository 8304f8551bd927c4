"""`reconciler secret encrypt` and `--age-identity` as a person uses them: a reference made on a
laptop, pasted into a task file, decrypted by the daemon for a real backup over SSH."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests import configset
from tests.agekeys import AgeKey, age_decrypt, age_encrypt, age_keygen, indented
from tests.gitrepo import init_repo
from tests.runs import server_file
from tests.servers import SshServer

SECRET = "backup passphrase, 41b7 & 'quotes'"


def reconciler(
    *args: str | Path, stdin: str = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reconciler", *map(str, args)],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture
def daemon_key(tmp_path: Path) -> AgeKey:
    return age_keygen(tmp_path / "daemon.key")


@pytest.fixture
def laptop_key(tmp_path: Path) -> AgeKey:
    return age_keygen(tmp_path / "laptop.key")


def test_secret_encrypt_prints_a_reference_that_the_age_cli_decrypts(daemon_key: AgeKey) -> None:
    result = reconciler("secret", "encrypt", "--recipient", daemon_key.recipient, stdin=SECRET)

    assert result.returncode == 0, result.stderr
    reference = yaml.safe_load(result.stdout)
    assert list(reference) == ["age"]
    assert age_decrypt(reference["age"], daemon_key) == SECRET.encode()


def test_secret_encrypt_leaves_out_the_newline_echo_adds(daemon_key: AgeKey) -> None:
    result = reconciler(
        "secret", "encrypt", "--recipient", daemon_key.recipient, stdin=f"{SECRET}\n"
    )

    assert age_decrypt(yaml.safe_load(result.stdout)["age"], daemon_key) == SECRET.encode()


def test_secret_encrypt_to_several_recipients_decrypts_with_each(
    daemon_key: AgeKey, laptop_key: AgeKey
) -> None:
    result = reconciler(
        "secret", "encrypt", "--recipient", daemon_key.recipient,
        "--recipient", laptop_key.recipient, stdin=SECRET,
    )  # fmt: skip

    armor = yaml.safe_load(result.stdout)["age"]
    assert age_decrypt(armor, daemon_key) == age_decrypt(armor, laptop_key) == SECRET.encode()


def test_the_output_pasted_into_a_task_file_validates(tmp_path: Path, daemon_key: AgeKey) -> None:
    printed = reconciler("secret", "encrypt", "--recipient", daemon_key.recipient, stdin=SECRET)
    config = tmp_path / "config"
    files = configset.base_files()
    files["tasks/1.yaml"] = (
        configset.task(1) + "encryption_password:\n" + indented(printed.stdout, 2)
    )
    init_repo(config, files)

    result = reconciler("validate", config)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 tasks" in result.stderr


def test_secret_encrypt_of_an_empty_secret_is_one_sentence(daemon_key: AgeKey) -> None:
    result = reconciler("secret", "encrypt", "--recipient", daemon_key.recipient, stdin="\n")

    assert result.returncode == 2
    assert result.stderr == "reconciler: the secret is empty\n"
    assert result.stdout == ""


def test_secret_encrypt_to_a_recipient_that_is_not_a_key_is_one_sentence() -> None:
    result = reconciler("secret", "encrypt", "--recipient", "age1typo", stdin=SECRET)

    assert result.returncode == 2
    assert "'age1typo' is not an age public key" in result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert result.stdout == ""


def backup_repo(tmp_path: Path, sshd: SshServer, armor: str) -> tuple[Path, Path]:
    """A config repository whose task 1 backs up a folder over SSH to `backups`, encrypted with
    the passphrase in `armor`; returns (repository, backups)."""
    source, backups = tmp_path / "data", tmp_path / "backups"
    (source / "nested").mkdir(parents=True)
    (source / "nested" / "file.txt").write_text("restored through an age-encrypted passphrase\n")
    files = {**configset.base_files(), "servers/one.yaml": server_file(sshd)}
    files["destinations/one.yaml"] = configset.destination(1, 1, path=str(backups))
    task = configset.task(1, source={"type": "files", "path": str(source)})
    files["tasks/1.yaml"] = task + "encryption_password:\n  age: |\n" + indented(armor, 4)
    init_repo(tmp_path / "config", files)
    return tmp_path / "config", backups


def gpg_decrypts_with(backup: Path, passphrase: str, home: Path) -> bool:
    home.mkdir(mode=0o700)
    result = subprocess.run(
        ["gpg", "--homedir", str(home), "--batch", "--pinentry-mode", "loopback",
         "--passphrase-fd", "0", "--decrypt", "--output", os.devnull, str(backup)],
        input=passphrase.encode(), capture_output=True, check=False,
    )  # fmt: skip
    return result.returncode == 0


@pytest.mark.parametrize("given_by", ["flag", "environment"])
def test_a_backup_is_encrypted_with_the_passphrase_an_age_cli_reference_holds(
    tmp_path: Path, sshd: SshServer, daemon_key: AgeKey, given_by: str
) -> None:
    repo, backups = backup_repo(tmp_path, sshd, age_encrypt(SECRET.encode(), daemon_key.recipient))
    state = tmp_path / "state" / "state.db"
    flag: list[str | Path] = ["--age-identity", daemon_key.identity] if given_by == "flag" else []
    env = {"RECONCILER_AGE_IDENTITY": str(daemon_key.identity)} if given_by != "flag" else {}

    run = reconciler("run", "1", "--repo", repo, "--state", state, *flag, env=env)

    assert run.returncode == 0, run.stdout + run.stderr
    (backup,) = backups.iterdir()
    assert backup.name.endswith(".tar.zst.gpg")
    assert gpg_decrypts_with(backup, SECRET, tmp_path / "gnupg")
    assert not gpg_decrypts_with(backup, "wrong", tmp_path / "gnupg-wrong")
    restored = tmp_path / "restored"
    result = reconciler(
        "restore", "1", "--to", restored, "--repo", repo, "--state", state, *flag, env=env
    )
    assert result.returncode == 0, result.stderr
    assert (restored / "data" / "nested" / "file.txt").read_text().startswith("restored")
    assert SECRET not in run.stdout + run.stderr + result.stdout + result.stderr


def test_run_without_the_identity_names_the_config_error_and_backs_up_nothing(
    tmp_path: Path, sshd: SshServer, daemon_key: AgeKey
) -> None:
    repo, backups = backup_repo(tmp_path, sshd, age_encrypt(SECRET.encode(), daemon_key.recipient))

    run = reconciler("run", "1", "--repo", repo, "--state", tmp_path / "state" / "state.db")

    assert run.returncode == 2
    assert "tasks/1.yaml" in run.stderr
    assert "--age-identity" in run.stderr
    assert not backups.exists()


def test_an_identity_file_that_is_not_one_is_one_sentence(tmp_path: Path) -> None:
    identity = tmp_path / "key.txt"
    identity.write_text("ssh-ed25519 AAAAC3Nza... me@laptop\n")
    init_repo(tmp_path / "config", configset.base_files())

    result = reconciler(
        "run", "1", "--repo", tmp_path / "config", "--state", tmp_path / "state" / "state.db",
        "--age-identity", identity,
    )  # fmt: skip

    assert result.returncode == 2
    assert result.stderr == (
        f"reconciler: age identity file {identity}, line 1: not an age secret key"
        " (expected AGE-SECRET-KEY-1..., as age-keygen writes it)\n"
    )
