"""`reconciler ls`'s reading path on a tar of many small members: time and peak Python memory.

A tar of `--members` files (default 100,000, a few bytes each) is written once with GNU tar into
/var/tmp. Each round lists it three ways, in this process: through restore.stream_plaintext and
listing.entry_of as `ls` does (the lines formatted and dropped), through the same tarfile stream
kept whole (tarfile's own iteration, which holds every member: the memory `tar_members` saves),
and `tar -tv` by hand (the baseline for time). Medians over `--rounds`; peak memory by
tracemalloc (Python allocations, all threads) in a second, traced listing.

Run: .venv/bin/python -m bench.bench_listing [--members 100000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tarfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import IO

from reconciler.commands import BackupFormat
from reconciler.listing import entry_of
from reconciler.models import SourceType
from reconciler.restore import stream_plaintext, tar_members

CACHE = Path("/var/tmp/reconciler-bench")
PLAIN_TAR = BackupFormat(SourceType.FILES, compressed=False, encrypted=False)


def archive(members: int) -> Path:
    path = CACHE / f"members-{members}.tar"
    if not path.exists():
        tree = CACHE / f"members-{members}"
        for number in range(members):
            folder = tree / f"d{number // 1000:03d}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"file {number}.txt").write_text(str(number))
        subprocess.run(["tar", "-C", str(CACHE), "-cf", str(path), tree.name], check=True)
    return path


def streamed(plaintext: IO[bytes]) -> int:
    with tarfile.open(fileobj=plaintext, mode="r|") as tar:
        return sum(bool(entry_of(member).line()) for member in tar_members(tar))


def kept(plaintext: IO[bytes]) -> int:
    with tarfile.open(fileobj=plaintext, mode="r|") as tar:
        return sum(bool(entry_of(member).line()) for member in tar)


def through_ls(path: Path, consume: Callable[[IO[bytes]], int]) -> tuple[float, int, int]:
    """Wall seconds (untraced: tracemalloc slows Python down many times), peak traced bytes (a
    second, traced listing) and entries of listing `path`."""
    started = time.perf_counter()
    with path.open("rb") as reader:
        entries = stream_plaintext(reader, None, PLAIN_TAR, consume)
    wall = time.perf_counter() - started
    tracemalloc.start()
    with path.open("rb") as reader:
        stream_plaintext(reader, None, PLAIN_TAR, consume)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return wall, peak, entries


def by_hand(path: Path) -> float:
    started = time.perf_counter()
    subprocess.run(["tar", "-tv", "-f", str(path)], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--members", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    path = archive(args.members)
    ls_runs, kept_runs, hand = [], [], []
    for _ in range(args.rounds):
        ls_runs.append(through_ls(path, streamed))
        kept_runs.append(through_ls(path, kept))
        hand.append(by_hand(path))
    ls_wall = statistics.median(run[0] for run in ls_runs)
    ls_peak = statistics.median(run[1] for run in ls_runs)
    kept_peak = statistics.median(run[1] for run in kept_runs)
    hand_wall = statistics.median(hand)
    print(f"{path.name}: {path.stat().st_size:,} bytes, {ls_runs[0][2]:,} entries")
    print(f"ls path:      median {ls_wall:.2f} s, peak {ls_peak / 1e6:.1f} MB")
    print(f"members kept: median peak {kept_peak / 1e6:.1f} MB ({kept_peak / ls_peak:.0f}x)")
    print(f"tar -tv:      median {hand_wall:.2f} s (ls / tar -tv: {ls_wall / hand_wall:.2f}x)")


if __name__ == "__main__":
    main()
