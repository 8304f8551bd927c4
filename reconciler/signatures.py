"""SSH signatures on commits: making them with a key, checking them against allowed signers.

Both are OpenSSH's and git's own work, run through reconciler.processes: a commit is signed by
`ssh-keygen -Y sign -n git` over its buffer, as `git commit -S` with `gpg.format=ssh` signs it,
and checked by git (`%G?` of `git log`, the check `git verify-commit` makes) against the
allowed-signers file. So a person's `git verify-commit` accepts the daemon's commits, and the
daemon accepts a person's, with nothing of ours in between.

Only SSH signatures count: git is told to run `false` for OpenPGP and X.509 signatures, so a key
that happens to be in the daemon user's GnuPG keyring never vouches for a commit.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from reconciler.allowedsigners import AllowedSigner, parse_allowed_signers
from reconciler.processes import ProcessError, run
from reconciler.types import ReconcilerError

NAMESPACE = "git"
SSH_KEYGEN_TIMEOUT = 30.0
VERIFY_TIMEOUT = 120.0
_FIELD = "\x1f"
# `git log` placeholders: commit, signature status, signer (the principal), key fingerprint.
_FORMAT = "%x1f".join(("%H", "%G?", "%GS", "%GK"))
_REFUSED = {
    "N": "the commit is not signed",
    "U": "it is signed by a key the allowed signers file does not list for git ({key})",
    "B": "its signature does not verify (a bad signature)",
    "X": "its signature has expired",
    "Y": "it is signed by an expired key ({key})",
    "R": "it is signed by a revoked key ({key})",
    "E": "its signature cannot be checked (not an SSH signature, or the allowed signers file"
    " cannot be read)",
}


class SigningError(ReconcilerError):
    """A key cannot sign, or a signature cannot be checked; the message says which and why."""


def public_key_argv(key: Path) -> list[str]:
    """The public half of a private key; an empty passphrase, so an encrypted key fails at once
    instead of prompting."""
    return ["ssh-keygen", "-y", "-P", "", "-f", str(key)]


def sign_argv(key: Path) -> list[str]:
    """Sign standard input, printing the armored signature."""
    return ["ssh-keygen", "-Y", "sign", "-n", NAMESPACE, "-f", str(key)]


def verify_argv(allowed_signers: Path, rev: str, *, skip: int, limit: int) -> list[str]:
    """Each commit of `rev`'s first-parent history (after `skip`, at most `limit`) with git's
    verdict on its signature, checked against `allowed_signers`."""
    return [
        "git",
        "-c",
        "gpg.format=ssh",
        "-c",
        f"gpg.ssh.allowedSignersFile={allowed_signers}",
        "-c",
        "gpg.ssh.program=ssh-keygen",
        "-c",
        "gpg.openpgp.program=false",
        "-c",
        "gpg.x509.program=false",
        "log",
        "--first-parent",
        f"--skip={skip}",
        f"--max-count={limit}",
        f"--format={_FORMAT}",
        "--end-of-options",
        rev,
        "--",
    ]


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether one commit is signed by an allowed signer: who signed it, or why it is refused."""

    revision: str
    trusted: bool
    signer: str | None = None
    reason: str | None = None


def parse_verdict(line: str) -> Verdict:
    """One line of `verify_argv`'s output."""
    revision, status, signer, key = [*line.split(_FIELD), "", "", ""][:4]
    if status == "G":
        return Verdict(revision, True, signer=signer or None)
    reason = _REFUSED.get(status, f"git reports signature status {status!r}")
    return Verdict(revision, False, reason=reason.format(key=key or "unknown key"))


def load_allowed_signers(path: Path) -> tuple[Path, tuple[AllowedSigner, ...]]:
    """The file's absolute path (git runs in the repository) and its signers, checked."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SigningError(f"{path}: cannot read the allowed signers file: {exc}") from None
    return path.absolute(), parse_allowed_signers(text, str(path))


class SigningKey:
    """An SSH private key (unencrypted: the daemon has nobody to ask for a passphrase) that
    signs commit buffers as git does. Checked when opened, so a missing or unusable key stops
    the daemon at start-up, never an API write later."""

    def __init__(self, path: Path) -> None:
        self.path = path.absolute()
        if not self.path.is_file():
            raise SigningError(f"{path}: the signing key is not a file")
        try:
            public = run(public_key_argv(self.path), timeout=SSH_KEYGEN_TIMEOUT).stdout
        except ProcessError as exc:
            raise SigningError(
                f"{path}: cannot use it as an SSH signing key (it must be an unencrypted private"
                f" key, mode 0600): {exc.stderr or exc.how}"
            ) from None
        key_type, _, rest = public.decode(errors="replace").strip().partition(" ")
        self.key_type = key_type
        self.public_key = rest.split(" ", 1)[0]

    def sign(self, buffer: str) -> str:
        """The armored SSH signature of a commit buffer, for its `gpgsig` header."""
        try:
            signed = run(sign_argv(self.path), input=buffer.encode(), timeout=SSH_KEYGEN_TIMEOUT)
        except ProcessError as exc:
            raise SigningError(f"signing with {self.path} failed: {exc}") from None
        return signed.stdout.decode()


class CommitVerifier:
    """git's verdict on commits of the repository at `root`, against an allowed-signers file.
    Blocking (a git process, and an ssh-keygen per signed commit)."""

    def __init__(self, root: Path, allowed_signers: Path) -> None:
        self._root = root
        self.allowed_signers = allowed_signers

    def verdicts(self, rev: str, *, skip: int = 0, limit: int = 1) -> list[Verdict]:
        """`rev`'s first-parent history from `skip` commits below it, newest first."""
        env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
        argv = verify_argv(self.allowed_signers, rev, skip=skip, limit=limit)
        try:
            listed = run(argv, cwd=self._root, env=env, timeout=VERIFY_TIMEOUT).stdout
        except ProcessError as exc:
            raise SigningError(f"cannot check the signature of {rev}: {exc}") from None
        return [parse_verdict(line) for line in listed.decode(errors="replace").splitlines()]
