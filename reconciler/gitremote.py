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

import itertools
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pygit2

from reconciler.gitstore import CommitSigner, GitError, write_commit
from reconciler.processes import Completed, ProcessError, run

PUSH_ATTEMPTS = 3
GIT_TIMEOUT = 120.0
# The remote a clone made by `ensure_clone` follows, as `git clone` names it.
ORIGIN = "origin"
# Where `follow` keeps our unpushed commits that no longer apply to the upstream branch.
SET_ASIDE_PREFIX = "refs/reconciler/set-aside/"
# How many of the commits kept aside a report names.
_LISTED_COMMITS = 20


# Why nothing of ours may be replayed onto (and signed on top of) a commit, or None when it may:
# with --allowed-signers, a remote's head that is not signed by an allowed key.
Distrust = Callable[[str], str | None]


class GitConflictError(GitError):
    """Our unpushed commits conflict with the upstream branch; they stay on our branch."""


class UntrustedUpstreamError(GitError):
    """The upstream head is not signed by an allowed key: ours are not replayed onto it and
    stay on our branch, unpushed, until a signed commit is the upstream head."""


@dataclass(frozen=True)
class SetAside:
    """Our unpushed commits that no longer applied to the upstream branch, kept on `ref`."""

    ref: str
    commits: tuple[str, ...]  # newest first, at most _LISTED_COMMITS
    upstream: str
    reason: str


@dataclass(frozen=True)
class Followed:
    """What one `follow` did: our branch went from `before` to `head`, the upstream's head."""

    before: str
    head: str
    rewritten: bool  # the upstream branch no longer contains what we fetched from it last time
    pushed: bool  # our commits were pushed
    set_aside: SetAside | None


def clone_argv(url: str, branch: str, directory: Path) -> list[str]:
    return ["git", "clone", "--quiet", "--no-tags", "--branch", branch, "--", url, str(directory)]


def redact(url: str) -> str:
    """`url` without credentials: no password, and for http(s) no user either (a token is
    often given as the user name). scp-like `user@host:path` names no secret and stays."""
    parts = urlsplit(url) if "://" in url else None
    if parts is None or (parts.username is None and parts.password is None):
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    if parts.username and not _user_is_secret(parts.scheme):
        host = f"{parts.username}@{host}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def scrub(text: str, url: str) -> str:
    """`text` (git's output) with `url`'s credentials taken out."""
    text = text.replace(url, redact(url))
    if "://" in url:
        parts = urlsplit(url)
        user = parts.username if _user_is_secret(parts.scheme) else None
        for secret in (parts.password, user):
            if secret:
                text = text.replace(secret, "***")
    return text


def _user_is_secret(scheme: str) -> bool:
    return scheme in ("http", "https")


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


def push(
    root: Path,
    remote: str = "origin",
    *,
    sign: CommitSigner | None = None,
    distrust: Distrust | None = None,
) -> None:
    """Push the checked-out branch of the repository at `root` to the same name on `remote`.

    A real conflict raises GitConflictError and leaves our branch exactly as it was. Commits
    replayed onto the upstream are new commits: signed with `sign`, as the store signed them;
    never onto an upstream head `distrust` gives a reason for (UntrustedUpstreamError).
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
        _rebase_onto(root, repo, branch, tracking, sign, distrust)
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
    root: Path,
    repo: pygit2.Repository,
    branch: str,
    tracking: str,
    sign: CommitSigner | None,
    distrust: Distrust | None,
) -> None:
    head = _commit(repo, branch)
    upstream = _commit(repo, tracking)
    _check_trusted(upstream, distrust)
    onto = _replay(repo, head, upstream, sign)
    _move(root, branch, str(head.id), str(onto.id), f"rebase onto {upstream.id}")


def _move(root: Path, branch: str, old: str, new: str, reason: str) -> bool:
    """Move `branch` from `old` to `new`, index and work tree with it; False (nothing moved)
    when the branch is no longer at `old`. Local modifications in the way raise
    GitConflictError and leave the branch at `old`."""
    moved = _git(root, move_branch_argv(branch, new, old, reason), check=False)
    if moved.returncode != 0:
        return False  # something committed meanwhile: the caller looks again
    try:
        # Exits non-zero when a file is really modified; read-tree then says which, and refuses.
        _git(root, refresh_argv(), check=False)
        _git(root, follow_argv(old, new))
    except GitError as exc:
        _git(root, move_branch_argv(branch, old, new, f"{reason} undone"))
        raise GitConflictError(
            f"upstream changes touch files with local modifications: {exc}"
        ) from exc
    return True


def _check_trusted(upstream: pygit2.Commit, distrust: Distrust | None) -> None:
    """Refuse to build on `upstream` when `distrust` says why: replaying our commits onto it
    and signing them would make a verified head of what nobody trusted."""
    reason = None if distrust is None else distrust(str(upstream.id))
    if reason is not None:
        raise UntrustedUpstreamError(
            f"the remote's head {str(upstream.id)[:12]} is not signed by an allowed key"
            f" ({reason}), so our commits are not replayed onto it"
        )


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
    base: pygit2.Oid | None = None,
) -> pygit2.Commit:
    """Our commits since `base` (default: the merge base), replayed one by one onto `upstream`
    (objects only), signed with `sign` when given."""
    if base is None:
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


def ensure_clone(directory: Path, url: str, branch: str) -> bool:
    """Make `directory` a clone of `url` with `branch` checked out, unless it is one already;
    True when it cloned. A directory that is not empty must already be that clone."""
    if not directory.exists() or (directory.is_dir() and not any(directory.iterdir())):
        directory.parent.mkdir(parents=True, exist_ok=True)
        try:
            _git(directory.parent, clone_argv(url, branch, directory))
        except GitError as exc:
            detail = scrub(str(exc), url)
            raise GitError(f"cannot clone {redact(url)} into {directory}: {detail}") from None
        return True
    check_clone(directory, url, branch)
    return False


def check_clone(directory: Path, url: str, branch: str) -> None:
    """Raise GitError unless `directory` is a clone of `url` with `branch` checked out."""
    expected = f"{directory} is not empty and not a git clone of {redact(url)}: give --repo an"
    expected += " empty or missing directory to clone into"
    try:
        repo = pygit2.Repository(str(directory), pygit2.enums.RepositoryOpenFlag.NO_SEARCH)
    except pygit2.GitError:
        raise GitError(expected) from None
    workdir = repo.workdir
    if workdir is None or Path(workdir).resolve() != directory.resolve():
        raise GitError(expected)
    origin = repo.remotes[ORIGIN].url if ORIGIN in repo.remotes.names() else None
    if origin is not None and origin != url and redact(origin) == redact(url):
        repo.remotes.set_url(ORIGIN, url)  # new credentials for the same remote (a new token)
        origin = url
    if origin is None or origin.rstrip("/") != url.rstrip("/"):
        cloned_from = "no origin" if origin is None else f"origin {redact(origin)}"
        raise GitError(
            f"{directory} is a clone with {cloned_from}, not of {redact(url)}: give --repo an"
            " empty or missing directory to clone into, or the URL it was cloned from"
        )
    checked_out = repo.references["HEAD"].target
    if checked_out != f"refs/heads/{branch}":
        raise GitError(
            f"{directory} has {str(checked_out).removeprefix('refs/heads/')} checked out, not"
            f" {branch}: check out {branch} there, or give --branch"
            f" {str(checked_out).removeprefix('refs/heads/')}"
        )


def follow(
    root: Path,
    branch: str,
    now: datetime,
    remote: str = ORIGIN,
    *,
    sign: CommitSigner | None = None,
    distrust: Distrust | None = None,
) -> Followed:
    """Fetch `branch` from `remote`, bring ours to its head, then push what is ours on top.

    Fast-forwards when we have nothing of our own. Our commits since the upstream head we last
    fetched (the unpushed ones) are replayed onto the new head, even when the upstream was
    rewritten (force-pushed): the commits it dropped stay dropped. If they no longer apply, a
    person's commit wins: ours are kept on a ref under SET_ASIDE_PREFIX and our branch follows
    the upstream. Never forces a push; a push rejected because the upstream moved meanwhile is
    tried again, a bounded number of times. `now` names the ref of commits kept aside; replayed
    commits are signed with `sign`, as the store signed them. Ours are never replayed onto an
    upstream head `distrust` gives a reason for (signing them would vouch for it): that raises
    UntrustedUpstreamError and leaves our branch as it was. With nothing of ours unpushed, such
    a head is followed like any other (the daemon then refuses to apply it, see
    reconciler.headtrust).
    """
    repo = pygit2.Repository(str(root))
    ref = f"refs/heads/{branch}"
    tracking = f"refs/remotes/{remote}/{branch}"
    before = str(_commit(repo, ref).id)
    rewritten = False
    set_aside: SetAside | None = None
    for _ in range(PUSH_ATTEMPTS):
        previous = _target(repo, tracking)
        _git(root, fetch_argv(remote, ref, tracking))
        upstream = _commit(repo, tracking)
        if previous is not None and not _contains(repo, upstream.id, previous):
            rewritten = True
        set_aside = (
            _integrate(root, repo, ref, upstream, previous, now, sign, distrust) or set_aside
        )
        head = _commit(repo, ref)
        if head.id == upstream.id:
            return Followed(before, str(head.id), rewritten, False, set_aside)
        if _contains(repo, head.id, upstream.id) and _push_once(root, remote, ref):
            return Followed(before, str(head.id), rewritten, True, set_aside)
    raise GitError(
        f"push of {branch} to {remote} was still rejected after {PUSH_ATTEMPTS} attempts"
    )


def _integrate(
    root: Path,
    repo: pygit2.Repository,
    ref: str,
    upstream: pygit2.Commit,
    previous: pygit2.Oid | None,
    now: datetime,
    sign: CommitSigner | None,
    distrust: Distrust | None,
) -> SetAside | None:
    """Bring our branch onto `upstream` (see `follow`); what was kept aside, if anything. A
    branch that moved meanwhile is left as it is, for the caller's next look."""
    head = _commit(repo, ref)
    # Ours since the upstream head last fetched; what the upstream dropped from there is gone.
    base = previous if previous is not None and _contains(repo, head.id, previous) else None
    # Reset back to an older commit (which our branch contains): not "nothing new", or the
    # commits it dropped would be pushed back as if they were ours.
    rewound = base is not None and not _contains(repo, upstream.id, base)
    if _contains(repo, head.id, upstream.id) and not rewound:
        return None  # nothing new upstream
    if _contains(repo, upstream.id, head.id):
        _move(root, ref, str(head.id), str(upstream.id), f"fast-forward to {upstream.id}")
        return None
    if head.id != base:  # commits of ours to replay (and sign)
        _check_trusted(upstream, distrust)
    try:
        onto = _replay(repo, head, upstream, sign, base)
    except GitConflictError as exc:
        kept = _keep_aside(repo, head, base, upstream, now, str(exc))
        _move(root, ref, str(head.id), str(upstream.id), f"follow {upstream.id}; ours kept aside")
        return kept
    _move(root, ref, str(head.id), str(onto.id), f"rebase onto {upstream.id}")
    return None


def _keep_aside(
    repo: pygit2.Repository,
    head: pygit2.Commit,
    base: pygit2.Oid | None,
    upstream: pygit2.Commit,
    now: datetime,
    reason: str,
) -> SetAside:
    name = f"{SET_ASIDE_PREFIX}{now:%Y%m%dT%H%M%SZ}-{str(head.id)[:12]}"
    if name not in repo.references:
        repo.references.create(name, head.id)
    walker = repo.walk(head.id)
    walker.hide(base if base is not None else upstream.id)
    commits = tuple(str(commit.id) for commit in itertools.islice(walker, _LISTED_COMMITS))
    return SetAside(name, commits, str(upstream.id), reason)


def _target(repo: pygit2.Repository, ref: str) -> pygit2.Oid | None:
    reference = repo.references.get(ref)
    if reference is None:
        return None
    return reference.peel(pygit2.Commit).id


def _contains(repo: pygit2.Repository, commit: pygit2.Oid, other: pygit2.Oid) -> bool:
    """Whether `other` is `commit` or one of its ancestors."""
    return commit == other or repo.descendant_of(commit, other)
