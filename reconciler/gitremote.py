"""Pushing the config repository's branch to its upstream, never under the store's lock.

`push` runs `git push`; a push rejected as not a fast-forward fetches the upstream branch,
replays our unpushed commits onto it and tries again, a bounded number of times. It never forces.

Push and fetch are network I/O (up to `GIT_TIMEOUT` each): they shell out to the git CLI, which
knows every transport and credential helper, through reconciler.processes, and they run outside
GitStore and its lock, so reads and commits go on while a push waits on a slow remote. Everything
here works on the repository as another process would, as a person's `git pull --rebase` does:

- the replay writes new commit objects only (libgit2's three-way tree merge, in a Repository of
  our own: git 2.39, Debian 12's, cannot yet replay a commit without a work tree);
- the branch is then moved with a compare-and-swap (`git update-ref BRANCH NEW OLD`): if anything
  committed meanwhile, nothing moves and the next attempt replays again;
- then index and work tree follow (`git update-index --refresh`, then `git read-tree -m -u OLD
  NEW`, which refuses before writing anything when a file it would change has local
  modifications; the branch is then put back).
"""

from __future__ import annotations

import os
from pathlib import Path

import pygit2

from reconciler.gitstore import CommitSigner, GitError, write_commit
from reconciler.processes import Completed, ProcessError, run

PUSH_ATTEMPTS = 3
GIT_TIMEOUT = 120.0


class GitConflictError(GitError):
    """Our unpushed commits conflict with the upstream branch; they stay on our branch."""


def push_argv(remote: str, branch: str) -> list[str]:
    return ["git", "push", "--porcelain", remote, f"{branch}:{branch}"]


def fetch_argv(remote: str, branch: str, tracking: str) -> list[str]:
    return ["git", "fetch", "--no-tags", remote, f"+{branch}:{tracking}"]


def move_branch_argv(branch: str, new: str, old: str, reason: str) -> list[str]:
    """Move `branch` to `new` only if it is still at `old`."""
    return ["git", "update-ref", "-m", reason, branch, new, old]


def refresh_argv() -> list[str]:
    """Refresh the index's file stat data, so a file touched but unchanged counts as unchanged."""
    return ["git", "update-index", "-q", "--refresh"]


def follow_argv(old: str, new: str) -> list[str]:
    """Bring index and work tree from commit `old` to commit `new`, as `git checkout` would."""
    return ["git", "read-tree", "-m", "-u", old, new]


def rejected(porcelain: str) -> bool:
    """Whether `git push --porcelain` output says a ref was refused as not a fast-forward."""
    return any(line.startswith("!") and "[rejected]" in line for line in porcelain.splitlines())


def push(root: Path, remote: str = "origin", *, sign: CommitSigner | None = None) -> None:
    """Push the checked-out branch of the repository at `root` to the same name on `remote`.

    A real conflict raises GitConflictError and leaves our branch exactly as it was. Commits
    replayed onto the upstream are new commits: signed with `sign`, as the store signed them.
    """
    repo = pygit2.Repository(str(root))
    if remote not in repo.remotes.names():
        raise GitError(f"{root}: no remote named {remote!r}")
    if repo.head_is_detached:
        raise GitError(f"{root}: HEAD is detached; check out a branch to push")
    branch = repo.references["HEAD"].target
    assert isinstance(branch, str)
    if repo.head_is_unborn:
        raise GitError(f"{root}: nothing to push, {branch} has no commits")
    name = branch.removeprefix("refs/heads/")
    tracking = f"refs/remotes/{remote}/{name}"
    for _ in range(PUSH_ATTEMPTS):
        if _push_once(root, remote, branch):
            return
        _git(root, fetch_argv(remote, branch, tracking))
        _rebase_onto(root, repo, branch, tracking, sign)
    raise GitError(f"push of {name} to {remote} was still rejected after {PUSH_ATTEMPTS} attempts")


def _git(root: Path, argv: list[str], *, check: bool = True) -> Completed:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    try:
        return run(argv, cwd=root, env=env, timeout=GIT_TIMEOUT, check=check)
    except ProcessError as exc:
        raise GitError(str(exc)) from exc


def _push_once(root: Path, remote: str, branch: str) -> bool:
    """True once pushed; False when rejected as not a fast-forward; GitError otherwise."""
    result = _git(root, push_argv(remote, branch), check=False)
    if result.returncode == 0:
        return True
    if rejected(result.stdout.decode(errors="replace")):
        return False
    detail = result.stderr or result.stdout.decode(errors="replace").strip()
    raise GitError(f"git push to {remote} failed: {detail}")


def _rebase_onto(
    root: Path, repo: pygit2.Repository, branch: str, tracking: str, sign: CommitSigner | None
) -> None:
    head = _commit(repo, branch)
    upstream = _commit(repo, tracking)
    onto = _replay(repo, head, upstream, sign)
    reason = f"rebase onto {upstream.id}"
    moved = _git(root, move_branch_argv(branch, str(onto.id), str(head.id), reason), check=False)
    if moved.returncode != 0:
        return  # something committed meanwhile: the next attempt replays that too
    try:
        # Exits non-zero when a file is really modified; read-tree then says which, and refuses.
        _git(root, refresh_argv(), check=False)
        _git(root, follow_argv(str(head.id), str(onto.id)))
    except GitError as exc:
        _git(root, move_branch_argv(branch, str(head.id), str(onto.id), "rebase undone"))
        raise GitConflictError(
            f"upstream changes touch files with local modifications: {exc}"
        ) from exc


def _commit(repo: pygit2.Repository, rev: str) -> pygit2.Commit:
    try:
        return repo.revparse_single(rev).peel(pygit2.Commit)
    except (KeyError, ValueError, pygit2.GitError) as exc:
        raise GitError(f"{rev!r} is not a commit in {repo.path}") from exc


def _replay(
    repo: pygit2.Repository,
    head: pygit2.Commit,
    upstream: pygit2.Commit,
    sign: CommitSigner | None,
) -> pygit2.Commit:
    """Our commits since the merge base, replayed one by one onto `upstream` (objects only)."""
    base = repo.merge_base(head.id, upstream.id)
    if base is None:
        raise GitConflictError(f"{upstream.id} shares no history with our branch")
    ours: list[pygit2.Commit] = []
    commit = head
    while commit.id != base:
        if len(commit.parents) != 1:
            raise GitConflictError(
                f"cannot replay {commit.id} onto {upstream.id}: only linear local history is"
                " rebased; merge by hand"
            )
        ours.append(commit)
        commit = commit.parents[0]
    onto = upstream
    for commit in reversed(ours):
        merged = repo.merge_trees(commit.parents[0].tree, onto.tree, commit.tree)
        if merged.conflicts is not None:
            paths = sorted({entry.path for side in merged.conflicts for entry in side if entry})
            raise GitConflictError(
                f"our commit {commit.id} ({commit.message.splitlines()[0]!r}) conflicts with"
                f" {upstream.id} in {', '.join(paths)}; our branch is unchanged, merge by hand"
            )
        tree_id = merged.write_tree(repo)
        created = write_commit(
            repo, sign, commit.author, commit.committer, commit.message, tree_id, [onto.id]
        )
        onto = _commit(repo, str(created))
    return onto
