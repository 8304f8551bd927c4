"""The work one API update does: counted per PUT, and its time beside the commit's.

The daemon's own wiring (`daemon.build`) on a generated config set (`bench_api.config_set`),
driven in-process (httpx's ASGI transport, one client, sequential PUTs of a new label), so that
the figures are the write path's own and not the HTTP server's. Wrapped for counting and timing:
YAML parses (`yamlsyntax.load`), round-trip loads of a task file (ruamel, `taskfile._load`), tree
listings (`GitStore.list_entries`), desired-state rebuilds (`build_desired`) and commits
(`GitStore.commit`, which is mostly git's fsyncs). "Without the commit" is a PUT's time less its
commit's: what this process spends around git.

Run: .venv/bin/python -m bench.bench_put [--tasks 1000] [--puts 100]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench.bench_api import config_set
from reconciler import engine, taskfile, yamlsyntax
from reconciler.daemon import Settings, build, close
from reconciler.gitstore import GitStore
from tests.gitrepo import init_repo

COUNTED: list[tuple[Any, str, str]] = [
    (yamlsyntax, "load", "YAML parses"),
    (taskfile, "_load", "ruamel loads"),
    (GitStore, "list_entries", "tree listings"),
    (engine, "build_desired", "desired-state rebuilds"),
    (GitStore, "commit", "commits"),
]


class Counter:
    def __init__(self) -> None:
        self.calls: dict[str, int] = dict.fromkeys((label for _, _, label in COUNTED), 0)
        self.seconds: dict[str, float] = dict.fromkeys(self.calls, 0.0)

    def wrap(self, owner: Any, name: str, label: str) -> None:
        original: Callable[..., Any] = getattr(owner, name)

        @functools.wraps(original)
        def counted(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.calls[label] += 1
                self.seconds[label] += time.perf_counter() - started

        setattr(owner, name, counted)

    def reset(self) -> None:
        for label in self.calls:
            self.calls[label], self.seconds[label] = 0, 0.0


async def main(tasks: int, puts: int) -> None:
    counter = Counter()
    for owner, name, label in COUNTED:
        counter.wrap(owner, name, label)
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "config"
        init_repo(repo, config_set(tasks))
        daemon = build(Settings(repo=repo, state=Path(tmp) / "state.db", port=1))
        await daemon.engine.sync()
        _, token = daemon.state.tokens.create_token(1, "bench", ["*"], datetime.now(UTC))
        own = sorted(task_id for task_id in daemon.engine.desired.tasks if task_id % 2 == 0)
        transport = httpx.ASGITransport(app=daemon.app)
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://bench", headers=headers
        ) as client:
            await client.put(f"/api/backup-tasks/{own[0]}", json={"label": "warm-up"})
            counter.reset()
            times: list[float] = []
            for index in range(puts):
                commits = counter.seconds["commits"]
                started = time.perf_counter()
                response = await client.put(
                    f"/api/backup-tasks/{own[index % len(own)]}", json={"label": f"edit {index}"}
                )
                elapsed = time.perf_counter() - started
                assert response.status_code == 200, response.text
                times.append(elapsed - (counter.seconds["commits"] - commits))
        await close(daemon)
    total = sum(times) + counter.seconds["commits"]
    print(
        f"{tasks} tasks, {puts} sequential PUTs: {total / puts * 1000:.1f} ms each,"
        f" without the commit p50 {statistics.median(times) * 1000:.1f} ms"
    )
    for label in counter.calls:
        print(
            f"  {label:<24} {counter.calls[label] / puts:5.1f} per PUT"
            f"  {counter.seconds[label] / puts * 1000:7.2f} ms per PUT"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--puts", type=int, default=100)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.tasks, arguments.puts))
