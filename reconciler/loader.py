"""The one owner of reading config files: a work tree on disk, and parsing many files at once.

YAML parsing is the slow part of a cold start (libyaml needs about 0.3 ms for a small task file
here, so about 3 s for 10,000 files on one core). Large batches are parsed by worker processes
while this process validates the batches already parsed, so both cores are busy.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

from reconciler import yamlsyntax
from reconciler.documents import (
    ParsedFile,
    RawYaml,
    is_ignored,
    is_yaml_path,
    parse_file,
    to_documents,
)

# Below this many files a worker pool costs more to start than it saves.
PARALLEL_THRESHOLD = 400
_BATCH = 250


def read_directory(root: Path) -> dict[str, bytes]:
    """Every YAML file of a config set on disk, keyed by its posix path relative to `root`."""
    if not root.is_dir():
        raise FileNotFoundError(f"config set {root} is not a directory")
    contents: dict[str, bytes] = {}
    for directory, subdirectories, names in os.walk(root):
        subdirectories[:] = [name for name in subdirectories if not name.startswith(".")]
        relative = Path(directory).relative_to(root)
        for name in names:
            path = (relative / name).as_posix()
            if is_yaml_path(path) and not is_ignored(path):
                contents[path] = (Path(directory) / name).read_bytes()
    return contents


def parse_files(contents: Mapping[str, bytes], workers: int | None = None) -> dict[str, ParsedFile]:
    workers = workers if workers is not None else (os.cpu_count() or 1)
    if len(contents) < PARALLEL_THRESHOLD or workers < 2:
        return {path: parse_file(path, text) for path, text in contents.items()}
    return dict(_parse_in_workers(contents, workers))


def _parse_in_workers(
    contents: Mapping[str, bytes], workers: int
) -> Iterator[tuple[str, ParsedFile]]:
    items = list(contents.items())
    batches = [items[start : start + _BATCH] for start in range(0, len(items), _BATCH)]
    # Worker i parses batches i, i + workers, ...; reading them back in that order lets this
    # process validate one batch while the workers parse the next ones.
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


def _package_parent() -> str:
    """Where `reconciler` is importable from, so workers find it however the daemon was started."""
    parent = str(Path(__file__).resolve().parent.parent)
    inherited = os.environ.get("PYTHONPATH")
    return parent if not inherited else f"{parent}{os.pathsep}{inherited}"
