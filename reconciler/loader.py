"""The one owner of reading config files: a work tree on disk, and parsing many files at once.

YAML parsing is the slow part of a cold start (libyaml needs about 0.3 ms for a small task file
here, so about 3 s for 10,000 files on one core). Large batches are parsed by worker processes
while this process validates the batches already parsed, so both cores are busy.
"""

from __future__ import annotations

import errno
import os
import pickle
import stat
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

from reconciler import yamlsyntax
from reconciler.documents import (
    MAX_FILE_BYTES,
    SYMLINK_REASON,
    ParsedFile,
    RawYaml,
    file_problem,
    is_ignored,
    is_yaml_path,
    parse_file,
    refused,
    to_documents,
)

# Below this many files a worker pool costs more to start than it saves.
PARALLEL_THRESHOLD = 400
_BATCH = 250
_NO_FOLLOW = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
_NOT_A_FILE = "not a regular file (a device, a FIFO or a socket); it is not read"


def parse_directory(root: Path) -> dict[str, ParsedFile]:
    """Every config file of a config set on disk, parsed, and every one refused unread.

    Nothing is followed: a symbolic link (to a file or a folder) below `root` is reported, never
    opened, and a file is opened with O_NOFOLLOW, so a link swapped in meanwhile is refused too.
    `root` itself is the folder the user named and may be reached through a link.
    """
    contents, refusals = read_directory(root)
    files = parse_files(contents)
    files.update((path, refused(path, reason)) for path, reason in refusals.items())
    return files


def read_directory(root: Path) -> tuple[dict[str, bytes], dict[str, str]]:
    """(contents of every readable YAML file, why each other config entry was refused), keyed
    by posix path relative to `root`; hidden files and folders are skipped."""
    if not root.is_dir():
        raise FileNotFoundError(f"config set {root} is not a directory")
    contents: dict[str, bytes] = {}
    refusals: dict[str, str] = {}
    folders = [(os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC), "")]
    try:
        while folders:
            folder, base = folders.pop()
            try:
                with os.scandir(folder) as entries:
                    listed = list(entries)
                for entry in listed:
                    path = f"{base}{entry.name}"
                    if is_ignored(path):
                        continue
                    if entry.is_symlink():
                        refusals[path] = SYMLINK_REASON
                    elif entry.is_dir(follow_symlinks=False):
                        opened = _open(entry.name, folder, os.O_DIRECTORY)
                        if isinstance(opened, int):
                            folders.append((opened, f"{path}/"))
                        else:
                            refusals[path] = opened
                    elif is_yaml_path(path):
                        read = _read_file(path, entry.name, folder)
                        if isinstance(read, bytes):
                            contents[path] = read
                        else:
                            refusals[path] = read
            finally:
                os.close(folder)
    finally:
        for folder, _ in folders:
            os.close(folder)
    return contents, refusals


def _open(name: str, folder: int, flags: int) -> int | str:
    """A file descriptor for `name` in `folder`, never through a link; else why not."""
    try:
        return os.open(name, _NO_FOLLOW | flags, dir_fd=folder)
    except OSError as exc:
        # ELOOP: it became a link after it was listed.
        return SYMLINK_REASON if exc.errno == errno.ELOOP else f"cannot be read: {exc.strerror}"


def _read_file(path: str, name: str, folder: int) -> bytes | str:
    """The file's bytes, reading at most the size limit plus one byte; else why not."""
    # O_NONBLOCK: opening a FIFO someone named x.yaml must not wait for a writer.
    opened = _open(name, folder, os.O_NONBLOCK)
    if isinstance(opened, str):
        return opened
    with os.fdopen(opened, "rb") as file:
        status = os.fstat(file.fileno())
        if not stat.S_ISREG(status.st_mode):
            return _NOT_A_FILE
        problem = file_problem(path, status.st_size)
        if problem is not None:
            return problem
        data = file.read(status.st_size + 1)
        if len(data) > status.st_size:  # it grew after fstat: still never past the limit
            data += file.read(MAX_FILE_BYTES + 1 - len(data))
    return data if len(data) <= MAX_FILE_BYTES else str(file_problem(path, len(data)))


def parse_files(contents: Mapping[str, bytes], workers: int | None = None) -> dict[str, ParsedFile]:
    workers = workers if workers is not None else (os.cpu_count() or 1)
    if len(contents) < PARALLEL_THRESHOLD or workers < 2:
        return {path: parse_file(path, text) for path, text in contents.items()}
    # Refused files (bad name, too large) are never sent to a worker.
    passed = {path: text for path, text in contents.items() if not file_problem(path, len(text))}
    files = {path: parse_file(path, text) for path, text in contents.items() if path not in passed}
    files.update(_parse_in_workers(passed, workers))
    return files


def _parse_in_workers(
    contents: Mapping[str, bytes], workers: int
) -> Iterator[tuple[str, ParsedFile]]:
    items = list(contents.items())
    batches = [items[start : start + _BATCH] for start in range(0, len(items), _BATCH)]
    # Worker i parses batches i, i + workers, ...; reading them back in that order lets this
    # process validate one batch while the workers parse the next ones.
    # Not through reconciler.processes: these are this program's own Python workers exchanging
    # pickles, not an external tool; they have no error output to bound (a crash surfaces as an
    # EOF on unpickling) and no deadline beyond the parse itself, and they are killed below.
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "reconciler.yamlsyntax"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": _package_parent()},
        )
        for _ in range(workers)
    ]
    try:
        for index, child in enumerate(children):
            assert child.stdin is not None
            texts = [[text for _, text in batch] for batch in batches[index::workers]]
            pickle.dump(texts, child.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            child.stdin.close()
        for number, batch in enumerate(batches):
            stream = children[number % workers].stdout
            assert stream is not None
            results = pickle.load(stream)  # noqa: S301 - our own child process
            for (path, text), (data, line, message) in zip(batch, results, strict=True):
                error = None if message is None else yamlsyntax.YamlSyntaxError(line, message)
                yield path, to_documents(path, text, RawYaml(data=data, error=error))
    finally:
        for child in children:
            child.kill()
            child.wait()
            if child.stdout is not None:
                child.stdout.close()


def _package_parent() -> str:
    """Where `reconciler` is importable from, so workers find it however the daemon was started."""
    parent = str(Path(__file__).resolve().parent.parent)
    inherited = os.environ.get("PYTHONPATH")
    return parent if not inherited else f"{parent}{os.pathsep}{inherited}"
