"""Real git repositories for tests, built with the git CLI (never with the code under test).

Every call pins identity, branch name and signing so the host's global git config cannot change
what a test sees.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from reconciler.gitstore import GitStore

TEST_NAME = "Test Author"
TEST_EMAIL = "test@example.com"

_CONFIG = (
    "-c",
    f"user.name={TEST_NAME}",
    "-c",
    f"user.email={TEST_EMAIL}",
    "-c",
    "commit.gpgsign=false",
    "-c",
    "init.defaultBranch=main",
    "-c",
    "core.hooksPath=/dev/null",
)


def git(repo: Path | str, *args: str, extra_env: Mapping[str, str] | None = None) -> str:
    """Run `git ARGS` in `repo` and return its stdout; a failure raises with git's stderr."""
    env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull}
    env.update(extra_env or {})
    result = subprocess.run(
        ["git", *_CONFIG, *args],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed in {repo}: {result.stderr.strip()}")
    return result.stdout


def git_as_a_person(repo: Path | str, *args: str) -> str:
    """`git ARGS` as a person at a terminal runs it: told that another git process holds the
    index lock (the daemon, committing), they run it again."""
    for _ in range(200):
        try:
            return git(repo, *args)
        except RuntimeError as refused:
            if "index.lock" not in str(refused):
                raise
            time.sleep(0.01)
    raise RuntimeError(f"git {' '.join(args)}: the index stayed locked in {repo}")


def _write(repo: Path, files: Mapping[str, str | None]) -> None:
    for name, content in files.items():
        target = repo / name
        if content is None:
            git(repo, "rm", "-q", "--", name)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content, encoding="utf-8")
        git(repo, "add", "--", name)


def init_repo(path: Path | str, files: Mapping[str, str]) -> str:
    """Create a repository at `path` on branch `main` with one commit of `files`; its sha.

    With no files the first commit is empty, so HEAD always exists afterwards.
    """
    repo = Path(path)
    repo.mkdir(parents=True, exist_ok=True)
    git(repo, "init", "-q", "-b", "main")
    _write(repo, files)
    git(repo, "commit", "-q", "--allow-empty", "-m", "initial")
    return head(repo)


def commit_files(repo: Path | str, files: Mapping[str, str | None], message: str) -> str:
    """Write (or, for None, delete) `files` and commit them; the new commit's sha."""
    root = Path(repo)
    _write(root, files)
    git(root, "commit", "-q", "--allow-empty", "-m", message)
    return head(root)


def rename(repo: Path | str, old: str, new: str, message: str) -> str:
    """`git mv old new` and commit; the new commit's sha."""
    root = Path(repo)
    (root / new).parent.mkdir(parents=True, exist_ok=True)
    git(root, "mv", "--", old, new)
    git(root, "commit", "-q", "-m", message)
    return head(root)


def head(repo: Path | str) -> str:
    return git(repo, "rev-parse", "HEAD").strip()


def append_commits(repo: Path | str, edits: Sequence[Mapping[str, str | None]], start: int) -> str:
    """One commit per mapping of `edits` (path -> new content, None deletes) on `main`,
    committed at `start`, `start + 1`, ... (unix seconds), with git fast-import: thousands of
    commits in a second. The work tree is then checked out at the new head; its sha."""
    root = Path(repo)
    stream = bytearray()
    for number, files in enumerate(edits):
        message = f"edit {number}".encode()
        stream += b"commit refs/heads/main\n"
        stream += f"committer {TEST_NAME} <{TEST_EMAIL}> {start + number} +0000\n".encode()
        stream += b"data %d\n%s\n" % (len(message), message)
        if number == 0:
            stream += b"from refs/heads/main^0\n"
        for path, content in files.items():
            if content is None:
                stream += f"D {path}\n".encode()
                continue
            data = content.encode()
            stream += f"M 100644 inline {path}\n".encode() + b"data %d\n%s\n" % (len(data), data)
    env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull}
    subprocess.run(
        ["git", *_CONFIG, "fast-import", "--quiet"],
        cwd=root, input=bytes(stream), env=env, check=True, capture_output=True,
    )  # fmt: skip
    git(root, "reset", "-q", "--hard", "main")
    return head(root)


def commit_symlink(repo: Path | str, link: str, target: str, message: str) -> str:
    """Create the symbolic link `link` -> `target` and commit it (git stores it, mode 120000)."""
    root = Path(repo)
    (root / link).parent.mkdir(parents=True, exist_ok=True)
    (root / link).symlink_to(target)
    git(root, "add", "--", link)
    git(root, "commit", "-q", "-m", message)
    return head(root)


def person_sets_max_backups(repo: Path, path: str, value: int) -> None:
    """A person on the backup host: edit `max_backups` in the work tree, `git commit -a`."""
    file = Path(repo) / path
    file.write_text(re.sub(r"max_backups: \d+", f"max_backups: {value}", file.read_text()))
    git_as_a_person(repo, "commit", "-q", "-am", f"person: keep {value}")


def work_tree_status(repo: Path) -> str:
    """`git status --porcelain` with every untracked file: empty when the work tree is clean."""
    return git(repo, "status", "--porcelain", "--untracked-files=all")


def small_config_repo(tmp_path: Path) -> Path:
    """A repository at `tmp_path/config` with one task, a users file and a README."""
    path = tmp_path / "config"
    init_repo(path, {"tasks/a.yaml": "id: 1\n", "users.yaml": "users: []\n", "README.md": "hi\n"})
    return path


def assert_repaired_after_kills(repo: Path, program: str, *, trials: int, seed: int) -> None:
    """Run `program` (Python that commits to `repo` forever, printing a line per commit) and
    SIGKILL it at a random moment after its first commit, `trials` times: each time the
    store's start-up repair leaves a clean work tree, no lock and a sound repository."""
    chance = random.Random(seed)
    for trial in range(trials):
        with subprocess.Popen(
            [sys.executable, "-c", program, str(repo)], stdout=subprocess.PIPE
        ) as child:
            assert child.stdout is not None
            child.stdout.readline()  # one commit made: the store is warm
            time.sleep(chance.uniform(0, 0.05))
            child.kill()

        GitStore(repo).repair_interrupted_commit()

        status = work_tree_status(repo)
        assert status == "", f"trial {trial}: {status}"
        assert not (repo / ".git/index.lock").exists()
        git(repo, "fsck", "--no-progress")


def shared_with_a_remote(repo: Path, files: Mapping[str, str], bare: Path) -> str:
    """`repo` made of `files` and pushed to a new bare repository `bare`, its origin, as a team's
    git server holds it; the file:// URL of `bare`."""
    init_repo(repo, files)
    git(bare.parent, "init", "-q", "--bare", "-b", "main", str(bare))
    git(repo, "remote", "add", "origin", str(bare))
    git(repo, "push", "-q", "origin", "main")
    return f"file://{bare}"


def person_pushes(person: Path, files: Mapping[str, str | None], message: str = "person") -> str:
    """A commit of `files` in `person`, pushed to its origin; its sha."""
    sha = commit_files(person, files, message)
    git(person, "push", "-q", "origin", "main")
    return sha
