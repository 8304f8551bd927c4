"""API benchmark: a daemon-like app (the daemon's own wiring) served by uvicorn on 127.0.0.1.

Generates a config repository with N tasks for two users, starts the app on a free port, and
measures over real HTTP (httpx, keep-alive, C concurrent clients), each phase bounded by a
request count and a time limit:
- GET /api/backup-tasks (a page of 15 tasks),
- GET /api/backup-tasks/{id},
- PUT /api/backup-tasks/{id} (one git commit + reconcile per request, serialized by the writer).

Run: .venv/bin/python -m bench.bench_api [--tasks 1000] [--requests 2000] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import uvicorn
import yaml

from reconciler.daemon import Settings, build
from tests.gitrepo import init_repo

USERS = [
    {"id": 1, "name": "Ada", "email": "ada@example.com", "timezone": "Europe/London"},
    {"id": 2, "name": "Grace", "email": "grace@example.com", "timezone": "America/New_York"},
]


def config_set(tasks: int) -> dict[str, str]:
    files = {"users.yaml": yaml.safe_dump(USERS, sort_keys=False)}
    for user in (1, 2):
        files[f"servers/{user}.yaml"] = yaml.safe_dump(
            {"id": user, "user_id": user, "label": f"s{user}", "host": "127.0.0.1", "port": 1}
        )
        files[f"destinations/{user}.yaml"] = yaml.safe_dump(
            {"id": user, "user_id": user, "label": "d", "type": "local", "path": "/var/tmp/b"}
        )
    for task_id in range(1, tasks + 1):
        user = 1 + task_id % 2
        files[f"tasks/{task_id}-task.yaml"] = yaml.safe_dump(
            {
                "id": task_id,
                "user_id": user,
                "label": f"task {task_id}",
                "remote_server_id": user,
                "backup_destination_id": user,
                "source": {"type": "files", "path": f"/srv/{task_id}"},
                "schedule": {
                    "frequency": "daily",
                    "time": f"{task_id % 24:02d}:{task_id % 60:02d}",
                },
            },
            sort_keys=False,
        )
    return files


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def measure(
    name: str,
    requests: int,
    seconds: float,
    concurrency: int,
    call: Callable[[int], Awaitable[httpx.Response]],
    baseline: float | None = None,
) -> float:
    """Runs one phase, prints its figures (and its ratio to `baseline` req/s); returns req/s."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    started = time.perf_counter()
    counter = iter(range(requests))

    async def worker() -> None:
        for index in counter:
            if time.perf_counter() - started > seconds:
                return
            begin = time.perf_counter()
            response = await call(index)
            latencies.append(time.perf_counter() - begin)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    ordered = sorted(latencies)
    rate = len(latencies) / elapsed
    ratio = f"  {rate / baseline:5.2f} x /healthz" if baseline else ""
    print(
        f"{name:<28} {rate:8.1f} req/s  "
        f"p50 {statistics.median(ordered) * 1000:6.1f} ms  "
        f"p95 {ordered[int(len(ordered) * 0.95) - 1] * 1000:6.1f} ms  "
        f"({len(latencies)} requests in {elapsed:.1f} s, statuses {statuses}){ratio}"
    )
    return rate


async def main(tasks: int, requests: int, concurrency: int, seconds: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "config"
        init_repo(repo, config_set(tasks))
        port = free_port()
        daemon = build(Settings(repo=repo, state=Path(tmp) / "state.db", port=port))
        await daemon.engine.sync()
        _, token = daemon.history.create_token(1, "bench", ["*"], datetime.now(UTC))
        server = uvicorn.Server(
            uvicorn.Config(daemon.app, host="127.0.0.1", port=port, log_level="warning")
        )
        serving = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.01)
        own = sorted(task_id for task_id in daemon.engine.desired.tasks if task_id % 2 == 0)
        headers = {"Authorization": f"Bearer {token}"}
        limits = httpx.Limits(max_connections=concurrency)
        print(f"{tasks} tasks ({len(own)} the caller's), {concurrency} concurrent clients")
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", headers=headers, limits=limits
        ) as client:
            # The floor of this server, client and machine: a trivial endpoint of the same app.
            floor = await measure(
                "GET /healthz (baseline)", requests, seconds, concurrency,
                lambda i: client.get("/healthz"),
            )  # fmt: skip
            await measure(
                "GET /api/backup-tasks",
                requests,
                seconds,
                concurrency,
                lambda i: client.get("/api/backup-tasks", params={"page": 1 + i % 10}),
                floor,
            )
            await measure(
                "GET /api/backup-tasks/{id}",
                requests,
                seconds,
                concurrency,
                lambda i: client.get(f"/api/backup-tasks/{own[i % len(own)]}"),
                floor,
            )
            await measure(
                "PUT /api/backup-tasks/{id}",
                max(1, requests // 4),
                seconds,
                concurrency,
                lambda i: client.put(
                    f"/api/backup-tasks/{own[i % len(own)]}", json={"label": f"edit {i}"}
                ),
                floor,
            )
        server.should_exit = True
        await serving
        await daemon.runner.close()
        daemon.history.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0, help="time limit per phase")
    arguments = parser.parse_args()
    asyncio.run(main(arguments.tasks, arguments.requests, arguments.concurrency, arguments.seconds))
