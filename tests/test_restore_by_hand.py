"""The README's "Restoring by hand" commands, read from the README itself and run as a script
would run them: no terminal, a fresh gpg home, backups made by this project's own writers."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from reconciler.encryption import EncryptingWriter

README = Path(__file__).resolve().parent.parent / "README.md"
PASSPHRASE = "correct horse battery staple"
FILES = {"srv/a.txt": b"alpha\n", "srv/sub/b.txt": b"beta\n"}
DUMP = b"CREATE TABLE t (id int);\nINSERT INTO t VALUES (1);\n"


def readme_commands() -> list[str]:
    """The shell lines of the README's code block under "### Restoring by hand"."""
    section = README.read_text().split("### Restoring by hand", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert block is not None, "no ```sh block under Restoring by hand"
    return [line for line in block.group(1).splitlines() if line.strip()]


class _Collected:
    """A ChunkWriter that keeps what it is given."""

    def __init__(self) -> None:
        self.data = b""

    def write(self, chunk: bytes) -> None:
        self.data += chunk

    def commit(self) -> None:
        pass

    def abort(self) -> None:
        self.data = b""


def _tar() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, content in FILES.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def _zstd(data: bytes) -> bytes:
    return subprocess.run(["zstd", "-q", "-c"], input=data, capture_output=True, check=True).stdout


def _encrypted(data: bytes) -> bytes:
    collected = _Collected()
    writer = EncryptingWriter(collected, PASSPHRASE)
    writer.write(data)
    writer.commit()
    return collected.data


@pytest.fixture
def backups(tmp_path: Path) -> Path:
    """The four backups the README's lines name, as the daemon writes them, and the passphrase
    file (mode 0600) the README says to make."""
    made = tmp_path / "backups"
    made.mkdir()
    tar = _tar()
    (made / "backup_1_20250101020304.tar.zst").write_bytes(_zstd(tar))
    (made / "backup_1_20250101020304.tar.zst.gpg").write_bytes(_encrypted(_zstd(tar)))
    (made / "backup_2_20250101020304.sql.zst.gpg").write_bytes(_encrypted(_zstd(DUMP)))
    (made / "backup_3_20250101020304.tar").write_bytes(tar)
    passphrase = made / "passphrase.txt"
    passphrase.write_text(PASSPHRASE + "\n")
    passphrase.chmod(0o600)
    return made


def _run_detached(command: str, cwd: Path, gnupg_home: Path) -> subprocess.CompletedProcess[str]:
    """`command` as a script runs it: a new session (so no controlling terminal to ask on),
    stdin closed, and a gpg home with nothing in it."""
    return subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", command],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        start_new_session=True,
        env={**os.environ, "GNUPGHOME": str(gnupg_home)},
        check=False,
    )


@pytest.mark.parametrize("command", readme_commands())
def test_each_restore_command_of_the_readme_works_without_a_terminal(
    command: str, backups: Path, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    shutil.copytree(backups, work)
    gnupg_home = tmp_path / "gnupg"
    gnupg_home.mkdir(mode=0o700)

    try:
        result = _run_detached(command, work, gnupg_home)
    finally:  # the agent gpg started for this home exits with it, not with the test run
        subprocess.run(
            ["gpgconf", "--homedir", str(gnupg_home), "--kill", "gpg-agent"],
            capture_output=True,
            timeout=30,
            check=False,
        )

    assert result.returncode == 0, result.stderr
    if "dump.sql" in command:
        assert (work / "dump.sql").read_bytes() == DUMP
    else:
        assert {name: (work / name).read_bytes() for name in FILES} == FILES
