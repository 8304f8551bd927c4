"""Creating a new config repository on disk (`reconciler init`): the one place that does it.

Finds the facts `scaffold` needs (the login, an SSH key, the person from git's own config), then
`git init -b main`, writes the files and commits them with the git CLI, as the person would.
An existing entry is never touched: a directory that is not empty is refused before anything is
written, and a failure part way removes exactly what this made.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

from reconciler.processes import ProcessError, run
from reconciler.scaffold import Host, scaffold_files
from reconciler.types import ReconcilerError

GIT_TIMEOUT = 60.0
COMMIT_MESSAGE = "Scaffold the config repository with reconciler init"
# The keys ssh-keygen writes by default, newest kind first.
KEY_NAMES = ("id_ed25519", "id_ecdsa", "id_rsa")
_LOGIN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
_EMAIL_HOST = re.compile(r"^[^@\s]+$")


class InitError(ReconcilerError):
    """The directory cannot become a new config repository."""


@dataclass(frozen=True, slots=True)
class Created:
    root: Path
    commit: str
    files: tuple[str, ...]
    host: Host
    author_configured: bool  # False: git had no author, so this repository got one of its own


def init_config_repo(directory: Path) -> Created:
    root = directory.absolute()
    made_root = _check_new(directory, root)
    written: list[Path] = []
    try:
        _git(root, "init", "-q", "-b", "main")
        name, email = _git_config(root, "user.name"), _git_config(root, "user.email")
        login = _login()
        host = _host_facts(root, login, name, email)
        if name is None:
            _git(root, "config", "user.name", host.person_name)
        if email is None:
            _git(root, "config", "user.email", host.person_email)
        files = scaffold_files(host)
        for path, text in files.items():
            target = root / path
            target.parent.mkdir(parents=True, exist_ok=True)
            written.append(target)
            target.write_text(text, encoding="utf-8")
        _git(root, "add", "--", *files)
        _git(root, "commit", "-q", "-m", COMMIT_MESSAGE)
        commit = _git(root, "rev-parse", "HEAD").strip()
    except BaseException:
        _remove_made(root, made_root, written)
        raise
    return Created(root, commit, tuple(files), host, name is not None and email is not None)


def _check_new(directory: Path, root: Path) -> bool:
    """Refuse anything but a missing or empty directory; True when it is missing (made here)."""
    if not root.exists():
        if root.is_symlink():
            raise InitError(f"{directory} is a dangling symbolic link; give a new directory")
        root.mkdir(parents=True)
        return True
    if not root.is_dir():
        raise InitError(f"{directory} exists and is not a directory; give a new or empty one")
    if (root / ".git").exists() or ((root / "HEAD").is_file() and (root / "objects").is_dir()):
        raise InitError(
            f"{directory} is already a git repository; reconciler init only creates new ones"
        )
    entries = sorted(entry.name for entry in os.scandir(root))
    if entries:
        raise InitError(
            f"{directory} is not empty (it holds {entries[0]!r}"
            f"{f' and {len(entries) - 1} more' if len(entries) > 1 else ''}); reconciler init "
            "only fills a new or empty directory and never overwrites anything"
        )
    return False


def _remove_made(root: Path, made_root: bool, written: list[Path]) -> None:
    """Undo a failed init: the directory was empty (or missing) before, so all of it is ours."""
    if made_root:
        shutil.rmtree(root, ignore_errors=True)
        return
    shutil.rmtree(root / ".git", ignore_errors=True)
    for path in written:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    for folder in sorted({path.parent for path in written}, key=lambda p: -len(p.parts)):
        if folder != root:
            with contextlib.suppress(OSError):
                folder.rmdir()


def _host_facts(root: Path, login: str, name: str | None, email: str | None) -> Host:
    home = Path.home()
    found = next(
        (home / ".ssh" / key for key in KEY_NAMES if (home / ".ssh" / key).is_file()), None
    )
    return Host(
        login=login,
        private_key=str(found or home / ".ssh" / KEY_NAMES[0]),
        key_exists=found is not None,
        person_name=name or _full_name(login),
        person_email=email or f"{login}@{_email_host()}",
        backup_dir="/var/backups/reconciler" if os.geteuid() == 0 else str(home / "backups"),
        repository=str(root),
    )


def _login() -> str:
    """This process's user name, if an SSH user name can be it; else root."""
    try:
        name = pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return "root"
    return name if _LOGIN.match(name) else "root"


def _full_name(login: str) -> str:
    try:
        gecos = pwd.getpwnam(login).pw_gecos.split(",")[0].strip()
    except KeyError:
        gecos = ""
    return gecos or login


def _email_host() -> str:
    name = socket.gethostname()
    return name if _EMAIL_HOST.match(name) else "localhost"


def _git_config(root: Path, key: str) -> str | None:
    """`git config --get KEY` as the person's git resolves it here; None when unset."""
    result = run(["git", "config", "--get", key], timeout=GIT_TIMEOUT, cwd=root, check=False)
    value = result.stdout.decode(errors="replace").strip()
    return value if result.returncode == 0 and value else None


def _git(root: Path, *args: str) -> str:
    try:
        return run(["git", *args], timeout=GIT_TIMEOUT, cwd=root).stdout.decode()
    except ProcessError as exc:
        raise InitError(f"{root}: {exc}") from exc
