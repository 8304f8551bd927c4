"""The cost of a run's completeness check alone (reconciler.verifier), apart from SSH and storage.

The backup bench's tree (bench.bench_backup, generated once) is archived with GNU tar, and once
more through `zstd -3`, into /var/tmp. Each stream is read into memory first, then fed to a
`StreamVerifier` in 4 MiB chunks, as the SSH thread feeds it during a run; the wall time, the CPU
of the feeding thread, of this whole process and of the `zstd -d` child are reported.

Run: .venv/bin/python -m bench.bench_verify [--size-mb 1024] [--rounds 3]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import time
from pathlib import Path

from bench.bench_backup import CACHE, tree_for
from reconciler.commands import BackupFormat
from reconciler.models import SourceType
from reconciler.verifier import StreamVerifier

CHUNK = 4 << 20


def streams(size_mb: int) -> tuple[Path, Path]:
    tree, _, _ = tree_for(size_mb)
    plain, compressed = CACHE / f"tree-{size_mb}MB.tar", CACHE / f"tree-{size_mb}MB.tar.zst"
    if not compressed.exists():
        subprocess.run(["tar", "cf", str(plain), "-C", str(tree), "."], check=True)
        subprocess.run(["zstd", "-q", "-3", "-f", str(plain), "-o", str(compressed)], check=True)
    return plain, compressed


def cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def measure(path: Path, compressed: bool) -> str:
    with path.open("rb", buffering=0) as file:
        chunks = list(iter(lambda: file.read(CHUNK), b""))
    own, children = cpu(resource.RUSAGE_SELF), cpu(resource.RUSAGE_CHILDREN)
    started, thread = time.perf_counter(), time.thread_time()
    with StreamVerifier(BackupFormat(SourceType.FILES, compressed, False)) as verifier:
        for chunk in chunks:
            verifier.feed(chunk)
        feeding = time.thread_time() - thread
        problem = verifier.finish()
    wall = time.perf_counter() - started
    if problem is not None:
        raise RuntimeError(f"{path}: {problem}")
    return (
        f"{path.name}: wall {wall:.2f} s, CPU: feeding thread {feeding:.2f} s, "
        f"process {cpu(resource.RUSAGE_SELF) - own:.2f} s, "
        f"zstd -d {cpu(resource.RUSAGE_CHILDREN) - children:.2f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    plain, compressed = streams(args.size_mb)
    for _ in range(args.rounds):
        print(measure(plain, compressed=False), flush=True)
        print(measure(compressed, compressed=True), flush=True)


if __name__ == "__main__":
    main()
