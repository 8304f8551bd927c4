"""The one owner of reading the config set at a commit and committing API writes.

Reads and commits run in-process with pygit2 (about 2 ms a commit); pushing to an upstream is
reconciler.gitremote's (the git CLI, never under this lock). The config set may be a
folder inside a larger repository (`prefix`); callers only ever see config-set-relative paths.

Every method holds one lock: a pygit2 Repository is not safe to share between threads, and
the daemon calls us from the event loop and from worker threads.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import cast

import pygit2
from pygit2.enums import DeltaStatus, FileMode, ObjectType, SortMode

from reconciler.atomicfile import fsync_directory, write_atomically
from reconciler.models import path_problem
from reconciler.types import ReconcilerError

_CONFIG_SUFFIXES = (".yaml", ".yml")
_REGULAR_FILES = (FileMode.BLOB, FileMode.BLOB_EXECUTABLE)
_FILE_TIMES_CACHE = 4096
_JOURNAL = "reconciler-commit.json"
_STAGED_INDEX = "reconciler-index"
_INDEX_LOCK_MARKER = "reconciler-index-lock"
# Seconds between tries to take git's index lock from a git command that holds it.
_INDEX_LOCK_WAITS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.8)
_FEW_LOOKUPS = 16
# Commits `commits_since` follows back one parent at a time before it walks the history.
_LINE_STEPS = 64
# libgit2 caches trees of up to 4 KiB only, so every diff from the applied commit read and parsed
# its 10,000-file folder again (about 4 ms of a commit's 8 ms tree diff). Trees this size and
# under stay in its object cache (bounded by its own 256 MiB total).
_TREE_CACHE_BYTES = 16 << 20


@dataclass(frozen=True)
class Author:
    name: str
    email: str


@dataclass(frozen=True, slots=True)
class Change:
    """One commit to make: config-set-relative paths to new contents (None deletes), who made it,
    why, and when (timezone-aware)."""

    writes: Mapping[str, bytes | None]
    author: Author
    message: str
    time: datetime


@dataclass(frozen=True, slots=True)
class FileChanges:
    """What one commit did to the config set's YAML files, counted as `git log -- path` does: a
    path changed when its version differs from every parent's (a merge that kept one parent's
    version changed nothing), and was added when no parent has it (a rename adds a new path)."""

    time: datetime
    changed: tuple[str, ...]
    added: tuple[str, ...]
    removed: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CommitInfo:
    """Who made a commit, when it was committed, and why (its whole message)."""

    sha: str
    author: Author
    time: datetime
    message: str


@dataclass(frozen=True, slots=True)
class CommitFiles:
    """One commit and each YAML path it changed (as FileChanges counts them): the path's blob
    in the commit's first parent and in the commit (None: absent there)."""

    commit: CommitInfo
    files: Mapping[str, tuple[str | None, str | None]]


class GitError(ReconcilerError):
    """A git operation failed; the message says which and why."""


class DirtyFileError(GitError):
    """A file to be written has uncommitted local modifications."""


class BranchMovedError(GitError):
    """The branch is no longer at the commit a write was prepared from; nothing was written."""


class RefusedChangeError(GitError):
    """One change of a chain cannot be committed (`error` says why); nothing was written."""

    def __init__(self, index: int, error: GitError | ValueError) -> None:
        super().__init__(f"change {index} of the chain: {error}")
        self.index = index
        self.error = error


def _is_config_file(path: str) -> bool:
    return path.endswith(_CONFIG_SUFFIXES)


@dataclass(frozen=True, slots=True)
class TreeEntry:
    """A config path in a commit: its blob, and whether git stores it as a symbolic link.

    A link's blob holds the path it points to; it is reported, never read or followed.
    """

    blob: str
    symlink: bool = False


def _signature(author: Author, now: datetime) -> pygit2.Signature:
    offset = now.utcoffset()
    if offset is None:
        raise ValueError(f"commit time must be timezone-aware, got {now!r}")
    for value in (author.name, author.email):
        if not value.strip() or any(char in value for char in "<>\n\r\x00"):
            raise ValueError(
                f"author name and email must be non-empty, without <, > or newlines: {author!r}"
            )
    return pygit2.Signature(
        author.name, author.email, int(now.timestamp()), int(offset.total_seconds() // 60)
    )


def _commit_time(commit: pygit2.Commit) -> datetime:
    return datetime.fromtimestamp(commit.commit_time, UTC)


@dataclass
class _Original:
    """A work tree file as it was before a commit touched it, to put back on failure."""

    content: bytes | None
    mode: int


# Signs a commit buffer, returning the armored signature for its `gpgsig` header; raises a
# ReconcilerError when it cannot.
CommitSigner = Callable[[str], str]


class GitStore:
    def __init__(self, path: Path, *, sign: CommitSigner | None = None) -> None:
        config_set = Path(path).resolve()
        if not config_set.is_dir():
            raise GitError(f"{path}: the config set must be an existing directory")
        git_dir = pygit2.discover_repository(str(config_set))
        # A libgit2 setting of the process, the same for every store: setting it again is free.
        pygit2.settings.cache_object_limit(ObjectType.TREE, _TREE_CACHE_BYTES)
        if git_dir is None:
            raise GitError(f"{path}: not inside a git repository (run `git init` there first)")
        self._repo = pygit2.Repository(git_dir)
        if self._repo.is_bare or self._repo.workdir is None:
            raise GitError(f"{path}: the repository at {git_dir} is bare; it needs a work tree")
        self.root = Path(self._repo.workdir).resolve()
        self.git_dir = Path(self._repo.path).resolve()
        if config_set == self.git_dir or self.git_dir in config_set.parents:
            raise GitError(f"{path}: is inside the .git directory")
        relative = config_set.relative_to(self.root).as_posix()
        self.prefix = "" if relative == "." else f"{relative}/"
        self._sign = sign
        self._lock = threading.Lock()
        self._times: OrderedDict[tuple[str, str], tuple[datetime, datetime] | None] = OrderedDict()

    @property
    def signer(self) -> CommitSigner | None:
        """What signs this store's commits (None: they are not signed)."""
        return self._sign

    # Reading

    def head(self) -> str | None:
        with self._lock:
            return self._head()

    def _head(self) -> str | None:
        if self._repo.head_is_unborn:
            return None
        return str(self._repo.head.target)

    def _commit(self, rev: str) -> pygit2.Commit:
        try:
            return self._repo.revparse_single(rev).peel(pygit2.Commit)
        except (KeyError, ValueError, pygit2.GitError) as exc:
            raise GitError(f"{rev!r} is not a commit in {self.root}") from exc

    def _config_tree(self, commit: pygit2.Commit) -> pygit2.Tree | None:
        if not self.prefix:
            return commit.tree
        try:
            subtree = commit.tree[self.prefix.rstrip("/")]
        except KeyError:
            return None
        return subtree if isinstance(subtree, pygit2.Tree) else None

    def commit_summary(self, rev: str) -> tuple[str, str]:
        """(full sha, subject line) of the commit `rev` names: any revision git accepts."""
        with self._lock:
            commit = self._commit(rev)
            # Raw bytes: a message in an encoding this host lacks must not fail a plan.
            subject = commit.raw_message.decode("utf-8", "replace").split("\n", 1)[0]
            return str(commit.id), subject.strip()

    def commit_time(self, rev: str) -> datetime:
        """When the commit `rev` names was committed (UTC): what orders nodes' revisions."""
        with self._lock:
            return _commit_time(self._commit(rev))

    def list_files(self, rev: str) -> dict[str, str]:
        """The YAML files of the config set at `rev` (symbolic links left out), with blob ids."""
        return {
            path: entry.blob for path, entry in self.list_entries(rev).items() if not entry.symlink
        }

    def list_entries(self, rev: str) -> dict[str, TreeEntry]:
        """Every YAML file and every symbolic link (whatever its name) of the config set."""
        with self._lock:
            tree = self._config_tree(self._commit(rev))
            return {} if tree is None else dict(self._walk(tree, ""))

    def _walk(self, tree: pygit2.Tree, base: str) -> Iterator[tuple[str, TreeEntry]]:
        for entry in tree:
            name = f"{base}{entry.name}"
            if entry.filemode == FileMode.TREE:
                subtree = self._repo[entry.id]
                assert isinstance(subtree, pygit2.Tree)
                yield from self._walk(subtree, f"{name}/")
            elif (found := _config_entry(entry, name)) is not None:
                yield name, found

    def changed_files(self, old: str, new: str) -> dict[str, TreeEntry | None]:
        """Config paths (YAML files, symbolic links) that differ between two commits.

        Each maps to its entry at `new`, or None where the path is absent at `new` (deleted, or
        renamed away). A tree diff, so a commit touching one file of 10,000 costs about as much
        as one touching one file of ten.
        """
        with self._lock:
            old_tree = self._config_tree(self._commit(old))
            new_tree = self._config_tree(self._commit(new))
            return {
                path: after
                for path, (_before, after) in self._entries_changed(old_tree, new_tree).items()
            }

    def existing(self, rev: str, paths: Iterable[str]) -> set[str]:
        """Which of `paths` are files at `rev`: one lookup each for a few, else one listing (a
        lookup parses the path's whole folder)."""
        wanted = set(paths)
        with self._lock:
            tree = self._config_tree(self._commit(rev))
            if len(wanted) <= _FEW_LOOKUPS:
                return {path for path in wanted if _entry_id(tree, path) is not None}
            files = set() if tree is None else {p for p, e in self._walk(tree, "") if not e.symlink}
            return wanted & files

    def blob_sizes(self, blob_ids: Iterable[str]) -> dict[str, int]:
        """The size of each blob, from its object header: nothing is read into memory."""
        with self._lock:
            sizes: dict[str, int] = {}
            for blob_id in blob_ids:
                try:
                    _, size = self._repo.odb.read_header(blob_id)
                except (KeyError, ValueError, pygit2.GitError) as exc:
                    raise GitError(f"blob {blob_id} is not in {self.git_dir}") from exc
                sizes[blob_id] = size
            return sizes

    def read_blobs(self, blob_ids: Iterable[str]) -> dict[str, bytes]:
        with self._lock:
            blobs: dict[str, bytes] = {}
            for blob_id in blob_ids:
                try:
                    blob = self._repo[blob_id]
                except (KeyError, ValueError) as exc:
                    raise GitError(f"blob {blob_id} is not in {self.git_dir}") from exc
                if not isinstance(blob, pygit2.Blob):
                    raise GitError(f"{blob_id} is a {type(blob).__name__}, not a blob")
                blobs[blob_id] = blob.data
            return blobs

    # Committing

    def _full_path(self, path: str) -> str:
        """The repository path of a config-set-relative `path`, refusing anything that escapes."""
        # Plain string work: this runs for every task of every API list page.
        parts = [part for part in path.split("/") if part]
        if (
            not path
            or path.startswith("/")
            or path_problem(path) is not None
            or any(part in ("..", ".") or part.lower() == ".git" for part in parts)
            or path.endswith("/")
        ):
            raise GitError(f"{path!r} is not a relative file path inside the config set")
        return self.prefix + "/".join(parts)

    def _branch(self) -> str:
        if self._repo.head_is_detached:
            raise GitError(f"{self.root}: HEAD is detached; check out a branch to commit on")
        target = self._repo.references["HEAD"].target
        assert isinstance(target, str)
        return target

    def _check_clean(self, full: str, head: _Entries) -> None:
        # The index would silently swap a file for a folder (or back): refuse instead.
        parents = [parent.as_posix() for parent in PurePosixPath(full).parents][:-1]
        entry = head.get(full)
        if (entry is not None and entry.filemode == FileMode.TREE) or any(
            (found := head.get(parent)) is not None and found.filemode != FileMode.TREE
            for parent in parents
        ):
            raise GitError(f"{full}: a file and a folder of that name cannot both exist")
        for part in [*reversed(parents), full]:
            if (self.root / part).is_symlink():
                # Writing through it would put files, or read them back on failure, outside.
                raise GitError(f"{part} is a symbolic link in the work tree; it is never followed")
        head_id = head.id(full)
        index = self._repo.index
        index_id = index[full].id if full in index else None
        try:
            on_disk = self.root / full
            if on_disk.is_dir():
                raise GitError(f"{full} is a directory in the work tree")
            worktree_id = pygit2.hashfile(str(on_disk)) if on_disk.exists() else None
        except (NotADirectoryError, FileNotFoundError):
            worktree_id = None
        if index_id != head_id or worktree_id != head_id:
            where = "staged" if index_id != head_id else "in the work tree"
            raise DirtyFileError(
                f"{full} has uncommitted local changes ({where}); commit or discard them first"
            )

    def commit(
        self,
        writes: Mapping[str, bytes | None],
        author: Author,
        message: str,
        now: datetime,
        *,
        parent: str | None,
    ) -> str:
        """Write, stage and commit `writes` on top of `parent`; on failure nothing is left behind.

        `parent` is the head the writes were prepared from (None: the branch has no commit yet).
        If the branch has moved since, BranchMovedError: committing whole files on top of a newer
        head would silently revert whatever that newer commit changed in them.

        Only these paths are committed: other staged or unstaged work is left as it was. When the
        writes change nothing, no commit is made and the current head is returned.
        """
        try:
            [sha] = self.commit_chain([Change(writes, author, message, now)], parent=parent)
        except RefusedChangeError as refused:
            raise refused.error from None
        return sha

    def commit_chain(self, changes: Sequence[Change], *, parent: str | None) -> list[str]:
        """Commit each change on top of the one before, the first on top of `parent`, all at once.

        Each change becomes its own commit (author, message, time), the next one's parent; the
        work tree, the index and the branch are then brought to the last one in one step (one
        journal, each file written once, one move of the branch), so a chain of N costs about
        one commit's disk syncs. Either every commit lands or none does. Returns, per change,
        the commit it landed in (a change that changes nothing makes no commit: the one before).

        A change that cannot be committed (a dirty file, a path outside the config set, a bad
        author) raises RefusedChangeError naming it, before anything is written: the caller may
        commit the others without it. BranchMovedError as for `commit`.
        """
        if not changes:
            raise ValueError("a chain needs at least one change")
        signatures: list[pygit2.Signature] = []
        for index, change in enumerate(changes):
            try:
                if not change.message.strip():
                    raise ValueError("a commit needs a message")
                signatures.append(_signature(change.author, change.time))
            except ValueError as exc:
                raise RefusedChangeError(index, exc) from exc
        with self._lock:
            repo = self._repo
            branch = self._branch()
            ref = None if repo.head_is_unborn else repo.references[branch]
            current = None if ref is None else str(ref.target)
            if current != parent:
                raise BranchMovedError(
                    f"{branch} moved from {parent or 'no commit'} to {current or 'no commit'}"
                )
            with self._index_lock():
                parent_commit = None if current is None else self._commit(current)
                head = _Entries(None if parent_commit is None else parent_commit.tree)
                repo.index.read(force=True)
                each_targets: list[dict[str, bytes | None]] = []
                for index, change in enumerate(changes):
                    try:
                        targets = {
                            self._full_path(path): data for path, data in change.writes.items()
                        }
                        for full in targets:
                            self._check_clean(full, head)
                    except GitError as exc:
                        raise RefusedChangeError(index, exc) from exc
                    each_targets.append(targets)

                blob_ids: dict[str, pygit2.Oid] = {}
                final: dict[str, bytes | None] = {}
                tip = None if parent_commit is None else parent_commit.id
                tree = head.tree
                landed: list[str] = []
                for index, (change, targets, signature) in enumerate(
                    zip(changes, each_targets, signatures, strict=True)
                ):
                    edits: dict[str, tuple[pygit2.Oid, FileMode] | None] = {}
                    for full, content in targets.items():
                        final[full] = content
                        if content is None:
                            blob_ids.pop(full, None)
                            edits[full] = None
                        else:
                            blob_ids[full] = repo.create_blob(content)
                            edits[full] = (blob_ids[full], head.mode(full))
                    try:
                        tree_id = _edited_tree(repo, tree, edits) or repo.TreeBuilder().write()
                    except GitError as exc:
                        raise RefusedChangeError(index, exc) from exc
                    if tree is None or tree_id != tree.id:
                        message = change.message
                        tip = write_commit(
                            repo,
                            self._sign,
                            signature,
                            signature,
                            message if message.endswith("\n") else f"{message}\n",
                            tree_id,
                            [] if tip is None else [tip],
                        )
                        tree = repo[tree_id].peel(pygit2.Tree)
                    assert tip is not None  # on an unborn branch the first change always commits
                    landed.append(str(tip))
                if parent_commit is None or tip != parent_commit.id:
                    assert tip is not None
                    self._apply(final, blob_ids, head, ref, branch, tip, changes[-1].message)
                return landed

    def _apply(
        self,
        targets: dict[str, bytes | None],
        blob_ids: dict[str, pygit2.Oid],
        head: _Entries,
        ref: pygit2.Reference | None,
        branch: str,
        commit_id: pygit2.Oid,
        message: str,
    ) -> None:
        """Work tree, index, then branch; any failure undoes the steps already taken.

        A journal naming the paths and their blobs before and after is written first and
        removed last, so a process killed half-way is repaired by `repair_interrupted_commit`.
        Each folder written to is synced once, after its last file.
        """
        repo = self._repo
        originals: dict[str, _Original] = {}
        created_dirs: list[Path] = []
        reflog = f"commit: {message.splitlines()[0]}"
        journal = {
            full: [_optional_id(head.id(full)), _optional_id(blob_ids.get(full))]
            for full in targets
        }
        write_atomically(self.git_dir / _JOURNAL, json.dumps(journal).encode(), 0o644)
        try:
            folders: dict[Path, None] = {}
            for full, content in targets.items():
                target = self.root / full
                executable = head.mode(full) == FileMode.BLOB_EXECUTABLE
                originals[full] = (
                    _Original(target.read_bytes(), target.stat().st_mode & 0o7777)
                    if target.exists()
                    else _Original(None, 0o755 if executable else 0o644)
                )
                if content is None:
                    if target.exists():
                        target.unlink()
                        fsync_directory(target.parent)
                        self._prune_empty_dirs(target.parent)
                    continue
                created_dirs.extend(self._make_dirs(target.parent))
                write_atomically(target, content, originals[full].mode, sync_folder=False)
                folders[target.parent] = None
            for folder in folders:
                fsync_directory(folder)
            self._stage(targets, blob_ids, head)
            if ref is None:
                repo.create_reference_direct(branch, commit_id, False, message=reflog)
            else:
                # libgit2 compares and swaps: this fails if another process (a person's `git
                # commit`) moved the branch since `ref` was read above.
                ref.set_target(commit_id, reflog)
        except BaseException as exc:
            # The index was never replaced: only the work tree needs putting back.
            self._restore(originals, created_dirs)
            (self.git_dir / _JOURNAL).unlink(missing_ok=True)
            if isinstance(exc, pygit2.GitError) and self._branch_moved(branch, ref):
                raise BranchMovedError(f"{branch} moved while committing") from exc
            if isinstance(exc, OSError | pygit2.GitError | ValueError):
                raise GitError(f"commit failed, nothing was changed: {exc}") from exc
            raise
        # The branch has moved: the commit landed. Committing git's lock puts the index in place
        # (a failure here leaves the journal, and the next start repairs the index).
        os.replace(self.git_dir / "index.lock", self.git_dir / "index")
        repo.index.read(force=True)
        (self.git_dir / _JOURNAL).unlink()
        self._times.clear()

    @contextlib.contextmanager
    def _index_lock(self) -> Iterator[None]:
        """Hold git's own index lock (`.git/index.lock`) while a commit checks, writes and moves
        the branch, as git itself does: a person's `git commit` meanwhile is refused by git
        ("Another git process seems to be running") instead of interleaving with ours and
        leaving a stale index. A git command holding it now is waited for, a little."""
        lock, marker = self.git_dir / "index.lock", self.git_dir / _INDEX_LOCK_MARKER
        # Says the lock is ours, so that a start after a kill knows it may remove it.
        marker.touch()
        for wait in (*_INDEX_LOCK_WAITS, None):
            try:
                os.close(os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
                break
            except FileExistsError:
                if wait is None:
                    marker.unlink(missing_ok=True)
                    raise GitError(
                        "another git process is using the repository (.git/index.lock exists);"
                        " nothing was written"
                    ) from None
                time.sleep(wait)
        try:
            yield
        finally:
            lock.unlink(missing_ok=True)  # gone already when the commit put it in place
            (self.git_dir / _STAGED_INDEX).unlink(missing_ok=True)
            marker.unlink(missing_ok=True)

    def _stage(
        self,
        targets: Mapping[str, bytes | None],
        blob_ids: Mapping[str, pygit2.Oid],
        head: _Entries,
    ) -> None:
        """The index with these paths as committed, written into the index lock we hold, to be
        put in place once the branch has moved. Every other entry is kept as it was, staged work
        and file stat data included."""
        index_file, staged = self.git_dir / "index", self.git_dir / _STAGED_INDEX
        if index_file.exists():
            shutil.copyfile(index_file, staged)
        else:
            staged.unlink(missing_ok=True)
        index = pygit2.Index(str(staged))
        for full, content in targets.items():
            if content is None:
                if full in index:
                    index.remove(full)
            else:
                # Exactly the blob committed, whatever a filter (say eol=crlf) would stage.
                index.add(pygit2.IndexEntry(full, blob_ids[full], head.mode(full)))
        index.write()
        os.replace(staged, self.git_dir / "index.lock")

    def repair_interrupted_commit(self) -> list[str]:
        """Put back what a process killed mid-commit left half-done; the paths repaired.

        Each path the journal names is set, in the work tree and the index, to the branch
        head's version, whether or not the commit landed (it was clean before the commit began),
        unless its content is neither the old nor the new one (a person changed it since: it
        is left alone). Our temporary files and the locks we held are removed. Call it at
        start-up, before anything else writes to the repository.
        """
        with self._lock:
            marker = self.git_dir / _INDEX_LOCK_MARKER
            if marker.exists():  # killed holding git's index lock, maybe before the journal
                (self.git_dir / "index.lock").unlink(missing_ok=True)
                (self.git_dir / _STAGED_INDEX).unlink(missing_ok=True)
                marker.unlink()
            journal_file = self.git_dir / _JOURNAL
            try:
                journal: dict[str, list[str | None]] = json.loads(journal_file.read_bytes())
            except FileNotFoundError:
                return []
            for lock in (self.git_dir / "index.lock", self.git_dir / f"{self._branch()}.lock"):
                lock.unlink(missing_ok=True)
            head = self._head()
            head_tree = None if head is None else self._commit(head).tree
            index = self._repo.index
            index.read(force=True)
            repaired = []
            for full, states in journal.items():
                target = self.root / full
                for temporary in target.parent.glob(f".{target.name}.*.tmp"):
                    temporary.unlink()
                on_disk = str(pygit2.hashfile(str(target))) if target.is_file() else None
                if on_disk not in states:
                    continue
                wanted = _entry_id(head_tree, full)
                if wanted is None:
                    target.unlink(missing_ok=True)
                    if full in index:
                        index.remove(full)
                else:
                    blob = self._repo[wanted]
                    assert isinstance(blob, pygit2.Blob)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    mode = (
                        0o755 if _entry_mode(head_tree, full) == FileMode.BLOB_EXECUTABLE else 0o644
                    )
                    write_atomically(target, blob.data, mode)
                    index.add(pygit2.IndexEntry(full, wanted, _entry_mode(head_tree, full)))
                repaired.append(full)
            index.write()
            journal_file.unlink()
            self._times.clear()
            return repaired

    def _branch_moved(self, branch: str, ref: pygit2.Reference | None) -> bool:
        now = self._repo.references.get(branch)
        return (None if now is None else now.target) != (None if ref is None else ref.target)

    def _make_dirs(self, directory: Path) -> list[Path]:
        """mkdir -p, returning the directories it created (deepest last)."""
        missing: list[Path] = []
        while not directory.exists():
            missing.append(directory)
            directory = directory.parent
        for path in reversed(missing):
            path.mkdir()
        return list(reversed(missing))

    def _prune_empty_dirs(self, directory: Path) -> None:
        # git itself never leaves an empty directory behind a deleted file; stop at the config set.
        stop = self.root / self.prefix
        while directory != stop and stop in directory.parents:
            try:
                directory.rmdir()
            except OSError:
                return
            directory = directory.parent

    def _restore(self, originals: dict[str, _Original], created_dirs: list[Path]) -> None:
        for full, original in originals.items():
            target = self.root / full
            if original.content is None:
                with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                    target.unlink()
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                write_atomically(target, original.content, original.mode)
        for directory in reversed(created_dirs):
            with contextlib.suppress(OSError):
                directory.rmdir()

    # History

    def file_times(self, path: str) -> tuple[datetime, datetime] | None:
        """(created, last changed) from the commits that added and last changed `path`.

        None when `path` is not in the head commit (never committed, or deleted since).
        """
        return self.files_times([path])[path]

    def files_times(
        self, paths: Iterable[str], rev: str | None = None
    ) -> dict[str, tuple[datetime, datetime] | None]:
        """`file_times` of several paths against one reading of the head, or at commit `rev`."""
        with self._lock:
            head = self._head() if rev is None else str(self._commit(rev).id)
            return {path: self._times_at(self._full_path(path), head) for path in paths}

    def _times_at(self, full: str, head: str | None) -> tuple[datetime, datetime] | None:
        if head is None:
            return None
        key = (full, head)
        if key in self._times:
            self._times.move_to_end(key)
            return self._times[key]
        times = self._walk_times(full, head)
        self._times[key] = times
        if len(self._times) > _FILE_TIMES_CACHE:
            self._times.popitem(last=False)
        return times

    def _walk_times(self, full: str, head: str) -> tuple[datetime, datetime] | None:
        ids: dict[pygit2.Oid, pygit2.Oid | None] = {}

        def blob_at(commit: pygit2.Commit) -> pygit2.Oid | None:
            if commit.id not in ids:
                ids[commit.id] = _entry_id(commit.tree, full)
            return ids[commit.id]

        created: datetime | None = None
        updated: datetime | None = None
        if blob_at(self._commit(head)) is None:
            return None
        for commit in self._repo.walk(head, SortMode.TOPOLOGICAL | SortMode.TIME):
            here = blob_at(commit)
            if here is None:
                continue
            before = [blob_at(parent) for parent in commit.parents]
            # Like `git log -- path`: a merge that kept one parent's version changed nothing.
            if here in before:
                continue
            if updated is None:
                updated = _commit_time(commit)
            if not any(before):
                created = _commit_time(commit)
        if updated is None:
            return None
        return (created or updated), updated

    def files_added(self, rev: str, since: str | None) -> tuple[dict[str, set[str]], str]:
        """Every YAML blob a commit reachable from `rev` added or changed, by path, skipping the
        commits reachable from `since` (already seen); and `rev` as a full sha, the next `since`.

        Cost is one tree diff per commit not seen before, so a caller that keeps `since` pays
        for the whole history once and then only for new commits. `since` no longer in the
        repository (history rewritten and collected) means every commit is walked again.
        """
        with self._lock:
            head = self._commit(rev)
            walker = self._repo.walk(head.id, SortMode.NONE)
            if since is not None:
                with contextlib.suppress(GitError):  # rewritten and collected: walk it all
                    walker.hide(self._commit(since).id)
            added: dict[str, set[str]] = {}
            for commit in walker:
                tree = self._config_tree(commit)
                if tree is None:
                    continue
                parents = [self._config_tree(parent) for parent in commit.parents] or [None]
                for parent in parents:
                    for name, (_before, after) in self._entries_changed(parent, tree).items():
                        if (blob := _file_blob(after)) is not None:
                            added.setdefault(name, set()).add(blob)
            return added, str(head.id)

    def recent_messages(self, rev: str, since: datetime, limit: int) -> list[tuple[str, str]]:
        """(sha, message) of the commits committed at `since` or later among the newest `limit`
        reachable from `rev`."""
        with self._lock:
            found: list[tuple[str, str]] = []
            walked = self._repo.walk(self._commit(rev).id, SortMode.TOPOLOGICAL | SortMode.TIME)
            # Filtered, not cut at the first old one: a merged branch's older commits (or a
            # skewed clock) may come before newer ones.
            for commit, _ in zip(walked, range(limit), strict=False):
                if _commit_time(commit) >= since:
                    found.append((str(commit.id), commit.message))
            return found

    def commits_since(self, old: str | None, new: str) -> list[str] | None:
        """Commits reachable from `new` but not from `old` (all of them for None), in the order
        `file_times` walks them, newest first; None when `old` is not an ancestor of `new` (the
        branch was reset or rewritten)."""
        with self._lock:
            head = self._commit(new)
            walker = self._repo.walk(head.id, SortMode.TOPOLOGICAL | SortMode.TIME)
            if old is not None:
                try:
                    base = self._commit(old)
                except GitError:
                    return None
                line = _line_back_to(head, base.id)
                if line is not None:
                    return line
                if base.id != head.id and not self._repo.descendant_of(head.id, base.id):
                    return None
                walker.hide(base.id)
            return [str(commit.id) for commit in walker]

    def file_changes(self, commit_id: str) -> FileChanges:
        """The YAML paths one commit changed, added and removed (see FileChanges)."""
        with self._lock:
            commit = self._commit(commit_id)
            changed, added, removed = [], [], []
            for path, (here, before) in self._file_versions(commit).items():
                if here is None:
                    removed.append(path)
                else:
                    changed.append(path)
                    if not any(before):
                        added.append(path)
            return FileChanges(_commit_time(commit), tuple(changed), tuple(added), tuple(removed))

    def commit_files(self, commit_id: str) -> CommitFiles:
        """One commit and the YAML files it changed, as FileChanges counts them."""
        with self._lock:
            commit = self._commit(commit_id)
            author = commit.author
            info = CommitInfo(
                sha=str(commit.id),
                # Decoded here, never refused: a commit's bytes are whatever its author's git wrote.
                author=Author(
                    author.raw_name.decode("utf-8", "replace"),
                    author.raw_email.decode("utf-8", "replace"),
                ),
                time=_commit_time(commit),
                message=commit.raw_message.decode("utf-8", "replace"),
            )
            files = {
                path: (before[0], here)
                for path, (here, before) in self._file_versions(commit).items()
            }
            return CommitFiles(info, files)

    def _file_versions(
        self, commit: pygit2.Commit
    ) -> dict[str, tuple[str | None, list[str | None]]]:
        """Each YAML path the commit changed (its blob differs from every parent's) or removed
        (some parent has it), sorted: its blob in the commit and in each parent (None: absent)."""
        tree = self._config_tree(commit)
        parents = [self._config_tree(parent) for parent in commit.parents] or [None]
        # One tree diff per parent: its cost is the files that differ, never the folder size.
        diffs = [self._entries_changed(parent, tree) for parent in parents]
        versions: dict[str, tuple[str | None, list[str | None]]] = {}
        for path in sorted(set().union(*diffs)):
            if not _is_config_file(path):
                continue
            here = next(_file_blob(diff[path][1]) for diff in diffs if path in diff)
            before = [_file_blob(diff[path][0]) if path in diff else here for diff in diffs]
            if (here is None and any(before)) or (here is not None and here not in before):
                versions[path] = (here, before)
        return versions

    def _entries_changed(
        self, old: pygit2.Tree | None, new: pygit2.Tree | None
    ) -> dict[str, tuple[TreeEntry | None, TreeEntry | None]]:
        """Each config path that differs between two trees: its entry (None: absent) in each.

        Taken from the diff itself: a lookup by path parses the path's whole folder, so looking
        up each of k changed paths in a folder of n files costs k x n (20 s for an import of
        10,000 files), where the diff costs about k.
        """
        if old is None or new is None:
            present = old or new
            entries = {} if present is None else dict(self._walk(present, ""))
            return {
                path: (None, entry) if old is None else (entry, None)
                for path, entry in entries.items()
            }
        changed: dict[str, tuple[TreeEntry | None, TreeEntry | None]] = {}
        for delta in old.diff_to_tree(new).deltas:
            before = None if delta.status == DeltaStatus.ADDED else _diff_entry(delta.old_file)
            after = None if delta.status == DeltaStatus.DELETED else _diff_entry(delta.new_file)
            if before is None and after is None:
                continue
            # A file that became a link (or back) is a deletion and an addition of one path.
            was_before, was_after = changed.get(delta.new_file.path, (None, None))
            changed[delta.new_file.path] = (before or was_before, after or was_after)
        return changed


def _line_back_to(head: pygit2.Commit, base: pygit2.Oid) -> list[str] | None:
    """The commits from `head` back to `base` (left out), newest first, when they are a short
    line of single-parent commits (the usual new commits); else None. A hidden walk costs the
    whole history (17 ms at 2,000 commits once the history was walked), this the line's length."""
    line: list[str] = []
    commit = head
    for _ in range(_LINE_STEPS):
        if commit.id == base:
            return line
        if len(commit.parents) != 1:
            return None
        line.append(str(commit.id))
        commit = commit.parents[0]
    return None


def write_commit(
    repo: pygit2.Repository,
    sign: CommitSigner | None,
    author: pygit2.Signature,
    committer: pygit2.Signature,
    message: str,
    tree: pygit2.Oid,
    parents: list[pygit2.Oid],
) -> pygit2.Oid:
    """A commit object (no ref moves), signed over its buffer as `git commit -S` signs when
    `sign` is given. A signer's failure is a GitError: only unreferenced objects were written."""
    if sign is None:
        return repo.create_commit(None, author, committer, message, tree, parents)
    parent_ids: list[str | pygit2.Oid] = list(parents)
    # pygit2's stub says Oid; it returns the commit's buffer, the text the signature covers.
    buffer = cast(str, repo.create_commit_string(author, committer, message, tree, parent_ids))
    try:
        signature = sign(buffer)
    except ReconcilerError as exc:
        raise GitError(f"the commit could not be signed, nothing was written: {exc}") from exc
    return repo.create_commit_with_signature(buffer, signature, "gpgsig")


class _Entries:
    """One tree's entries by path, each looked up once: a lookup parses the path's whole folder
    (0.2 ms in a folder of 1,000 files), and a commit asks about each path several times."""

    def __init__(self, tree: pygit2.Tree | None) -> None:
        self.tree = tree
        self._found: dict[str, pygit2.Object | None] = {}

    def get(self, path: str) -> pygit2.Object | None:
        if path not in self._found:
            self._found[path] = _entry(self.tree, path)
        return self._found[path]

    def id(self, path: str) -> pygit2.Oid | None:
        """The blob of a regular file at `path`."""
        entry = self.get(path)
        return None if entry is None or entry.filemode not in _REGULAR_FILES else entry.id

    def mode(self, path: str) -> FileMode:
        """The mode to commit `path` with: executable stays executable."""
        entry = self.get(path)
        if entry is not None and entry.filemode == FileMode.BLOB_EXECUTABLE:
            return FileMode.BLOB_EXECUTABLE
        return FileMode.BLOB


_Edit = tuple[pygit2.Oid, FileMode] | None


def _edited_tree(
    repo: pygit2.Repository, tree: pygit2.Tree | None, edits: Mapping[str, _Edit]
) -> pygit2.Oid | None:
    """`tree` with each path set to a blob (None: removed), rebuilding only the folders on the
    way to an edited path (5 times faster than staging the whole tree in an index and writing
    it); None when nothing is left, as git keeps no empty folders."""
    here: dict[str, _Edit] = {}
    below: dict[str, dict[str, _Edit]] = {}
    for path, edit in edits.items():
        name, slash, rest = path.partition("/")
        if slash:
            below.setdefault(name, {})[rest] = edit
        else:
            here[name] = edit
    builder = repo.TreeBuilder() if tree is None else repo.TreeBuilder(tree)
    for name, edit in here.items():
        existing = builder.get(name)
        if existing is not None and existing.filemode == FileMode.TREE:
            raise GitError(f"{name}: a file and a folder of that name cannot both exist")
        if edit is not None:
            builder.insert(name, *edit)
        elif existing is not None:
            builder.remove(name)
    for name, edits_below in below.items():
        existing = builder.get(name)
        if existing is not None and existing.filemode != FileMode.TREE:
            if any(edit is not None for edit in edits_below.values()):
                raise GitError(f"{name}: a file and a folder of that name cannot both exist")
            continue  # removing paths below a file: there is nothing to remove
        subtree = None if existing is None else repo[existing.id].peel(pygit2.Tree)
        edited = _edited_tree(repo, subtree, edits_below)
        if edited is not None:
            builder.insert(name, edited, FileMode.TREE)
        elif existing is not None:
            builder.remove(name)
    return builder.write() if len(builder) else None


def _entry(tree: pygit2.Tree | None, path: str) -> pygit2.Object | None:
    if tree is None:
        return None
    try:
        return tree[path]
    except KeyError:
        return None


def _diff_entry(file: pygit2.DiffFile) -> TreeEntry | None:
    """The TreeEntry of one side of a diff, as `_config_entry` would give it."""
    if file.mode == FileMode.LINK:
        return TreeEntry(str(file.id), symlink=True)
    if file.mode in _REGULAR_FILES and _is_config_file(file.path):
        return TreeEntry(str(file.id))
    return None


def _file_blob(entry: TreeEntry | None) -> str | None:
    """The blob of a regular file; None for a link or nothing."""
    return None if entry is None or entry.symlink else entry.blob


def _config_entry(entry: pygit2.Object | None, path: str) -> TreeEntry | None:
    """The TreeEntry of a config path: a regular YAML file, or a symbolic link of any name."""
    if entry is None:
        return None
    if entry.filemode == FileMode.LINK:
        return TreeEntry(str(entry.id), symlink=True)
    if entry.filemode in _REGULAR_FILES and _is_config_file(path):
        return TreeEntry(str(entry.id))
    return None


def _entry_id(tree: pygit2.Tree | None, path: str) -> pygit2.Oid | None:
    entry = _entry(tree, path)
    return None if entry is None or entry.filemode not in _REGULAR_FILES else entry.id


def _optional_id(oid: pygit2.Oid | None) -> str | None:
    return None if oid is None else str(oid)


def _entry_mode(tree: pygit2.Tree | None, path: str) -> FileMode:
    entry = _entry(tree, path)
    if entry is not None and entry.filemode == FileMode.BLOB_EXECUTABLE:
        return FileMode.BLOB_EXECUTABLE
    return FileMode.BLOB
