"""Real SSH keys (made by ssh-keygen) and commits signed the way a person signs them, with git's
own SSH signing (`git -c gpg.format=ssh -c user.signingkey=KEY commit -S`)."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tests.gitrepo import commit_files, git, head


@dataclass(frozen=True)
class Key:
    private: Path
    principal: str

    @property
    def public(self) -> str:
        """`KEYTYPE BASE64`, as an allowed-signers line wants it."""
        text = self.private.with_name(self.private.name + ".pub").read_text()
        return " ".join(text.split()[:2])


def make_key(directory: Path, name: str) -> Key:
    directory.mkdir(parents=True, exist_ok=True)
    private = directory / name
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(private)],
        check=True,
        capture_output=True,
    )
    return Key(private, f"{name}@example.com")


def allowed_signers(path: Path, *keys: Key) -> Path:
    path.write_text("".join(f"{key.principal} {key.public}\n" for key in keys))
    return path


def signed_commit(repo: Path, files: Mapping[str, str | None], message: str, key: Key) -> str:
    """Commit `files` signed with `key` by git itself; the new commit's sha."""
    unsigned = commit_files(repo, files, message)
    git(repo, "-c", "gpg.format=ssh", "-c", f"user.signingkey={key.private}",
        "commit", "-q", "--amend", "--no-edit", "--allow-empty", "-S")  # fmt: skip
    assert head(repo) != unsigned
    return head(repo)


def verify_commit(repo: Path, rev: str, signers: Path) -> subprocess.CompletedProcess[str]:
    """`git verify-commit` as a person runs it, against `signers`."""
    return subprocess.run(
        ["git", "-c", "gpg.format=ssh", "-c", f"gpg.ssh.allowedSignersFile={signers}",
         "verify-commit", rev],
        cwd=repo, capture_output=True, text=True, check=False,
    )  # fmt: skip
