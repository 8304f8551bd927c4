"""Core benchmark: 10,000 task files in a real git repository.

Prints, for the reconcile engine with the real GitStore, state store, Scheduler and ref watcher:
- cold start: a fresh process's time from start to all tasks scheduled (imports included), and
  the first reconcile alone;
- one committed edit's latency: `git commit` returns -> the scheduler runs the new version
  (median and p90 over several edits), through the same file watch the daemon uses;
- peak RSS of the process;
- two parts of the first reconcile alone (medians of 5): listing the 10,000 files of the head
  commit, and marking 10,000 tasks seen in a new state store;
- as baselines measured in the same run: single-threaded PyYAML (libyaml) loading the same
  10,000 files, and the ratio of the cold start to it; for the edit latency, the floor under it:
  the same ref watch, then the tree diff from the previous commit and the changed file's parse
  alone, committed to and timed the same way (median), and the ratio of the edit median to it.

Run: .venv/bin/python -m bench.bench_core [--tasks 10000] [--edits 15]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path

import yaml

from reconciler.gitstore import GitStore
from reconciler.models import BackupTask, ResolvedTask
from tests import configset
from tests.gitrepo import git


def generate(repo: Path, count: int) -> None:
    files = configset.base_files()
    for task_id in range(1, count + 1):
        files[f"tasks/{task_id}-task.yaml"] = configset.task(
            task_id,
            user_id=1 + task_id % 2,
            description=f"generated task {task_id}",
            schedule={"frequency": "daily", "time": f"{task_id % 24:02d}:{task_id % 60:02d}"},
            storage={"max_backups": 7, "path": f"task-{task_id}"},
        )
    for path, text in files.items():
        target = repo / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "generated")


def libyaml_baseline(repo: Path) -> float:
    texts = [path.read_bytes() for path in (repo / "tasks").iterdir()]
    started = time.perf_counter()
    for text in texts:
        yaml.load(text, Loader=yaml.CSafeLoader)
    return time.perf_counter() - started


class Clock:
    def now(self) -> datetime:
        return datetime.now(UTC)


def edit_task(repo: Path, edit: int) -> tuple[int, str]:
    """Relabel task 500 + edit in the work tree; (its id, its new label)."""
    task_id, label = 500 + edit, f"edited {edit}"
    path = repo / "tasks" / f"{task_id}-task.yaml"
    path.write_text(path.read_text().replace(f"label: task {task_id}", f"label: {label}"))
    return task_id, label


async def timed_edits(
    repo: Path, edits: Iterable[int], applied: Callable[[int], ResolvedTask | None]
) -> list[float]:
    """Seconds from each edit's `git commit` returning to `applied(task id)` showing it."""
    latencies = []
    for edit in edits:
        task_id, label = edit_task(repo, edit)
        await asyncio.to_thread(git, repo, "commit", "-q", "-am", f"edit {edit}")
        committed = time.perf_counter()
        while (task := applied(task_id)) is None or task.task.label != label:
            if time.perf_counter() - committed > 10:
                raise RuntimeError(f"edit {edit} did not reach the scheduler within 10 s")
            await asyncio.sleep(0.001)
        latencies.append(time.perf_counter() - committed)
        await asyncio.sleep(0.05)
    return latencies


async def watch_diff_parse_floor(repo: Path, store: GitStore, edits: Iterable[int]) -> float:
    """Median latency of the ref watch, the tree diff from the previous head and the changed
    file's parse alone (in the reconcile thread, as the engine does them): what an edit costs
    before any desired state, plan or scheduler."""
    from reconciler.engine import parse_entries
    from reconciler.watcher import ref_changes

    seen: dict[int, ResolvedTask] = {}
    start = store.head()
    assert start is not None
    applied = [start]

    def diff_and_parse() -> None:
        head = store.head()
        assert head is not None
        changes = store.changed_files(applied[-1], head).items()
        parsed = parse_entries(store, {path: entry for path, entry in changes if entry})
        for task in (task for file in parsed.values() for task in file.objects):
            assert isinstance(task, BackupTask)
            seen[task.id] = ResolvedTask.model_construct(task=task)
        applied.append(head)

    stop = asyncio.Event()

    async def follow() -> None:
        async for _ in ref_changes(store.git_dir, stop):
            await asyncio.to_thread(diff_and_parse)

    watcher = asyncio.create_task(follow())
    await asyncio.sleep(0.3)
    latencies = await timed_edits(repo, edits, seen.get)
    stop.set()
    await asyncio.gather(watcher, return_exceptions=True)
    return statistics.median(latencies)


def parts(store: GitStore, scratch: Path) -> tuple[float, float]:
    """Median seconds of listing the head's files, and of marking 10,000 tasks seen."""
    from reconciler.state.sqlite import SqliteStateStore

    head = store.head()
    assert head is not None
    listings, markings = [], []
    scratch.mkdir()
    for attempt in range(5):
        started = time.perf_counter()
        store.list_entries(head)
        listings.append(time.perf_counter() - started)
        history = SqliteStateStore(scratch / f"state-{attempt}.db")
        started = time.perf_counter()
        history.schedule.mark_seen(range(1, 10_001), datetime.now(UTC))
        markings.append(time.perf_counter() - started)
        history.close()
    return statistics.median(listings), statistics.median(markings)


async def measure(repo: Path, state: Path, edits: int, process_start: float) -> dict[str, float]:
    from reconciler.engine import Engine
    from reconciler.scheduler import Scheduler
    from reconciler.state.sqlite import SqliteStateStore
    from reconciler.watcher import ref_changes

    clock = Clock()
    history = SqliteStateStore(state)
    scheduler = Scheduler(clock, lambda task, slot: None)
    store = GitStore(repo)
    engine = Engine(store=store, scheduler=scheduler, state=history, clock=clock)
    first = time.perf_counter()
    await engine.sync()
    ready = time.perf_counter()
    count = len(scheduler.tasks)
    gc.freeze()  # as the daemon does after its first reconcile

    stop = asyncio.Event()

    async def follow() -> None:
        async for _ in ref_changes(store.git_dir, stop):
            await engine.sync()

    watcher = asyncio.create_task(follow())
    await asyncio.sleep(0.3)  # let the watch settle before the first edit
    latencies = await timed_edits(repo, range(edits), lambda task_id: scheduler.tasks[task_id])
    stop.set()
    await asyncio.gather(watcher, return_exceptions=True)
    engine.close()
    history.close()
    floor = await watch_diff_parse_floor(repo, store, range(edits, 2 * edits))
    listing, marking = parts(store, state.with_name("parts"))
    latencies.sort()
    return {
        "tasks": count,
        "cold_start_process_s": ready - process_start,
        "first_reconcile_s": ready - first,
        "edit_median_ms": statistics.median(latencies) * 1000,
        "edit_p90_ms": latencies[int(len(latencies) * 0.9) - 1] * 1000,
        "baseline_watch_diff_parse_median_ms": floor * 1000,
        "edit_median_vs_watch_diff_parse": statistics.median(latencies) / floor,
        "list_entries_10000_ms": listing * 1000,
        "mark_seen_10000_ms": marking * 1000,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def child(repo: Path, state: Path, edits: int, process_start: float) -> None:
    print(json.dumps(asyncio.run(measure(repo, state, edits, process_start))))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--edits", type=int, default=15)
    parser.add_argument("--child", nargs=2, type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--started", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.edits, args.started)
        return
    with tempfile.TemporaryDirectory(prefix="bench-core-") as scratch:
        repo, state = Path(scratch) / "config", Path(scratch) / "state.db"
        repo.mkdir()
        print(f"generating {args.tasks} task files and committing them ...", file=sys.stderr)
        generate(repo, args.tasks)
        baseline = statistics.median(libyaml_baseline(repo) for _ in range(3))
        # A fresh interpreter, so the cold start includes imports and nothing is warm. The
        # start time is CLOCK_MONOTONIC (perf_counter on Linux), shared by both processes.
        output = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.bench_core",
                "--edits",
                str(args.edits),
                "--child",
                str(repo),
                str(state),
                "--started",
                str(time.perf_counter()),
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        figures = json.loads(output.strip().splitlines()[-1])
    figures["baseline_libyaml_single_thread_s"] = baseline
    figures["cold_start_vs_libyaml_baseline"] = figures["cold_start_process_s"] / baseline
    width = max(len(name) for name in figures)
    for name, value in figures.items():
        print(
            f"{name:<{width}}  {value:.3f}"
            if isinstance(value, float)
            else f"{name:<{width}}  {value}"
        )


if __name__ == "__main__":
    main()
