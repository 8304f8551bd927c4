"""Task history against history length: GET /api/backup-tasks/{id}/history at 10 and 2,000 commits.

For each history length, a config set of `--tasks` tasks (two users) whose history is grown to
that many commits by edits of task labels (git fast-import; every `--every`th commit edits task
1, the others a task of their own), served by the daemon's own wiring (`daemon.build`, reconciled)
in-process through httpx. Prints, per length, medians of:
- the first page (15 entries) of task 1 with no history read yet: the whole history read once
  (`reconciler serve` reads it in a background thread at start, so this is the worst case: a
  request that comes before that read is done);
- a steady page, and the last page;
- the first page after a new commit (commit, reconcile, GET), over `--rounds` rounds;
- as the floor under a walk per request: `git log --follow` of task 1's file (the git CLI), and
  the ratio of the first page after a commit to it.

Run: .venv/bin/python -m bench.bench_history [--lengths 10,2000] [--tasks 200] [--rounds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import yaml

from bench.bench_api import config_set
from reconciler.daemon import Settings, build, close
from tests.gitrepo import append_commits, commit_files, git, init_repo

TASK = 1
PATH = f"tasks/{TASK}-task.yaml"


def task_text(task_id: int, label: str) -> str:
    text: str = yaml.safe_dump(
        {
            "id": task_id,
            "user_id": 1 + task_id % 2,
            "label": label,
            "remote_server_id": 1 + task_id % 2,
            "backup_destination_id": 1 + task_id % 2,
            "source": {"type": "files", "path": f"/srv/{task_id}"},
            "schedule": {"frequency": "daily", "time": "02:30"},
        },
        sort_keys=False,
    )
    return text


def grow(repo: Path, commits: int, tasks: int, every: int) -> None:
    edits = [
        {
            PATH
            if number % every == 0
            else f"tasks/{2 + number % (tasks - 1)}-task.yaml": task_text(
                TASK if number % every == 0 else 2 + number % (tasks - 1), f"edit {number}"
            )
        }
        for number in range(commits - 1)
    ]
    append_commits(repo, edits, start=1_800_000_000)


async def timed(call: Callable[[], Awaitable[Any]]) -> float:
    started = time.perf_counter()
    await call()
    return time.perf_counter() - started


async def one_length(commits: int, tasks: int, every: int, rounds: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "config"
        init_repo(repo, config_set(tasks))
        grow(repo, commits, tasks, every)
        daemon = build(Settings(repo=repo, state=Path(tmp) / "state.db"))
        try:
            await daemon.engine.sync()
            owner = 1 + TASK % 2
            _, token = daemon.state.tokens.create_token(owner, "bench", ["*"], daemon.clock.now())
            headers = {"Authorization": f"Bearer {token}"}
            transport = httpx.ASGITransport(app=daemon.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
                url = f"/api/backup-tasks/{TASK}/history"

                async def page(query: str = "") -> dict[str, Any]:
                    response = await client.get(url + query, headers=headers, timeout=600)
                    response.raise_for_status()
                    body: dict[str, Any] = response.json()
                    return body

                first = await timed(page)
                body = await page()
                total, last_page = body["meta"]["total"], body["meta"]["last_page"]
                steady = [await timed(page) for _ in range(20)]
                last = [await timed(lambda: page(f"?page={last_page}")) for _ in range(20)]
                after_commit = []
                for number in range(rounds):
                    commit_files(repo, {PATH: task_text(TASK, f"round {number}")}, "round")
                    await daemon.engine.sync()
                    after_commit.append(await timed(page))
                walks = []
                for _ in range(5):
                    started = time.perf_counter()
                    git(repo, "log", "--follow", "--format=%H %an %ae %ct %s", "--", PATH)
                    walks.append(time.perf_counter() - started)
        finally:
            await close(daemon)
    figures = {
        "entries": float(total),
        "first page, none read yet": first,
        "steady page": statistics.median(steady),
        "last page": statistics.median(last),
        "first page after a commit": statistics.median(after_commit),
        "git log --follow": statistics.median(walks),
    }
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="10,2000")
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--every", type=int, default=10, help="every n-th commit edits task 1")
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    for commits in (int(length) for length in args.lengths.split(",")):
        figures = asyncio.run(one_length(commits, args.tasks, args.every, args.rounds))
        entries = int(figures.pop("entries"))
        print(f"{commits:,} commits ({entries} entries of task {TASK}):")
        for name, seconds in figures.items():
            print(f"  {name:<28} {seconds * 1000:9.1f} ms")
        ratio = figures["first page after a commit"] / figures["git log --follow"]
        print(f"  {'after a commit / git log':<28} {ratio:9.2f}")


if __name__ == "__main__":
    main()
