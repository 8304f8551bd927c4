"""API benchmark: a daemon-like app (the daemon's own wiring) served by uvicorn on 127.0.0.1.

Generates a config repository with N tasks for two users, starts the app on a free port, and
measures over real HTTP (httpx, keep-alive, C concurrent clients), each phase bounded by a
request count and a time limit:
- GET /api/backup-tasks (a page of 15 tasks),
- GET /api/backup-tasks/{id},
- PUT /api/backup-tasks/{id} (one git commit + reconcile per request, serialized by the writer).

Run: .venv/bin/python -m bench.bench_api [--tasks 1000] [--requests 2000] [--concurrency 8]

With `--history 10,2000` it measures instead, in one process, the task list at each history
length with the same tasks (each file's created_at/updated_at must not cost the history's
length): the first list page after a commit and a steady list page (medians), how long the
file-time index took to build, and the ratio of the longest history's figures to the shortest's.
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

from reconciler.daemon import Settings, build, close
from tests.gitrepo import append_commits, commit_files, init_repo

USERS = [
    {"id": 1, "name": "Ada", "email": "ada@example.com", "timezone": "Europe/London"},
    {"id": 2, "name": "Grace", "email": "grace@example.com", "timezone": "America/New_York"},
]


def config_set(tasks: int, users: int = 2) -> dict[str, str]:
    """`tasks` tasks spread over the first `users` users (1 or 2) by their ids."""
    files = {"users.yaml": yaml.safe_dump(USERS[:users], sort_keys=False)}
    for user in range(1, users + 1):
        files[f"servers/{user}.yaml"] = yaml.safe_dump(
            {"id": user, "user_id": user, "label": f"s{user}", "host": "127.0.0.1", "port": 1}
        )
        files[f"destinations/{user}.yaml"] = yaml.safe_dump(
            {"id": user, "user_id": user, "label": "d", "type": "local", "path": "/var/tmp/b"}
        )
    for task_id in range(1, tasks + 1):
        user = 1 + task_id % users
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
        _, token = daemon.state.tokens.create_token(1, "bench", ["*"], datetime.now(UTC))
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
        await close(daemon)


async def list_by_history(tasks: int, lengths: list[int], rounds: int) -> None:
    """Task-list latency at each history length (commits), same config set; medians."""
    figures: dict[int, tuple[float, float]] = {}
    for length in lengths:
        with tempfile.TemporaryDirectory() as tmp:
            figures[length] = await _list_at_history_length(Path(tmp), tasks, length, rounds)
    shortest, longest = min(lengths), max(lengths)
    first = figures[longest][0] / figures[shortest][0]
    steady = figures[longest][1] / figures[shortest][1]
    print(
        f"ratio {longest} / {shortest} commits: first list after a commit {first:.2f}, "
        f"steady list {steady:.2f}"
    )


async def _list_at_history_length(
    tmp: Path, tasks: int, length: int, rounds: int
) -> tuple[float, float]:
    repo = tmp / "config"
    files = config_set(tasks)
    init_repo(repo, files)
    own = [task_id for task_id in range(1, tasks + 1) if task_id % 2 == 0]
    edits = [{f"tasks/{own[n % len(own)]}-task.yaml": f"# edit {n}\n"} for n in range(length - 1)]
    # Comment-only edits: the history grows, the tasks stay the same.
    edits = [{path: files[path] + content for path, content in edit.items()} for edit in edits]
    append_commits(repo, edits, int(time.time()) - length)
    port = free_port()
    daemon = build(Settings(repo=repo, state=tmp / "state.db", port=port))
    started = time.perf_counter()
    await daemon.engine.sync()
    while daemon.state.file_times.file_times_revision() != daemon.engine.revision:
        await asyncio.sleep(0.01)
    indexed = time.perf_counter() - started
    _, token = daemon.state.tokens.create_token(2, "bench", ["*"], datetime.now(UTC))
    server = uvicorn.Server(
        uvicorn.Config(daemon.app, host="127.0.0.1", port=port, log_level="warning")
    )
    serving = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    firsts: list[float] = []
    steadies: list[float] = []
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=headers) as client:

        async def timed_list() -> float:
            begin = time.perf_counter()
            response = await client.get("/api/backup-tasks")
            assert response.status_code == 200, response.text
            return time.perf_counter() - begin

        await timed_list()  # the connection and the first request's one-off costs
        for round_number in range(rounds):
            path = f"tasks/{own[round_number]}-task.yaml"
            commit_files(repo, {path: files[path] + f"# round {round_number}\n"}, "bench edit")
            await daemon.engine.sync()
            firsts.append(await timed_list())
            steadies.extend([await timed_list() for _ in range(5)])
    server.should_exit = True
    await serving
    await close(daemon)
    first, steady = statistics.median(firsts), statistics.median(steadies)
    print(
        f"{length:>6} commits, {tasks} tasks: first list after a commit p50 {first * 1000:7.1f} ms,"
        f" steady list p50 {steady * 1000:6.1f} ms, file-time index built in {indexed:.2f} s"
        f" ({rounds} commits, {len(steadies)} steady lists)"
    )
    return first, steady


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0, help="time limit per phase")
    parser.add_argument(
        "--history",
        metavar="N,M",
        help="instead: the task list at these history lengths (commits), e.g. 10,2000",
    )
    parser.add_argument("--rounds", type=int, default=15, help="commits per history length")
    arguments = parser.parse_args()
    if arguments.history:
        lengths = [int(length) for length in arguments.history.split(",")]
        asyncio.run(list_by_history(arguments.tasks, lengths, arguments.rounds))
    else:
        asyncio.run(
            main(arguments.tasks, arguments.requests, arguments.concurrency, arguments.seconds)
        )
