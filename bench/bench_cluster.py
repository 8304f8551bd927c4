"""Start delays of many runs due in one minute: one node against several sharing one state store.

A config set of `--tasks` files tasks (default 10,000) on `--servers` server entries (default 50,
all the loopback sshd this bench starts, each `max_parallel_runs: --per-server`), backing up a
tree of three small files to a local destination. Every task is first scheduled far away; once
every node has applied that revision, one commit moves `--due` of them (default 200, spread over
the servers) to the same minute, at least `--lead` seconds ahead, and `POST /api/sync` on each
node applies it. After the minute, the runs in the shared state store say when each started.

Two phases in the same process, each with its own remote, clones and store:
- **baseline**: one node (`--workers`, default 8), the SQLite store;
- **cluster**: `--nodes` nodes (default 3), each with `--workers`, sharing one store: the SQLite
  file, or with `--backend postgresql` a database on a PostgreSQL this bench starts.
Each phase prints the start delays (run start minus the fire time; median, p99, max), how many
runs each due task had (exactly one is the rule), and the most runs at once per server and per
node (which node ran a run is read from its log's "task T run R started" line).

The server entries log in as a fresh user whose login shell is /bin/sh, as a server's backup
account would be. `--as-root` logs in as root instead, whose shell on this machine is bash
reading a ~/.bashrc that runs `pyenv init`: about 90 ms of CPU for every remote command, which the
"servers" here take from the same two cores as the daemons (measured: sshd spends 110 ms of CPU on
a tiny backup as root, 20 ms as a /bin/sh user).

Run: .venv/bin/python -m bench.bench_cluster [--tasks 10000] [--due 200] [--servers 50]
         [--per-server 4] [--nodes 3] [--workers 8] [--backend sqlite|postgresql] [--lead 45]
         [--phases baseline cluster] [--as-root]
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import yaml

from reconciler.state import open_state
from reconciler.state.location import state_location
from reconciler.types import RunStatus
from tests.servers import SshServer, free_port, shell_user, start_postgres, start_sshd

SOURCE = Path("/var/tmp/reconciler-bench/cluster-source")
STARTUP_SECONDS = 600.0


@dataclass(frozen=True)
class Shape:
    tasks: int
    due: int
    servers: int
    per_server: int
    workers: int
    lead: float


@dataclass(frozen=True)
class Login:
    """Whom the server entries log in as, on the bench's sshd."""

    sshd: SshServer
    username: str


@dataclass(frozen=True)
class Node:
    name: str
    url: str
    process: subprocess.Popen[bytes]
    log: Path


@dataclass(frozen=True)
class Outcome:
    delays: list[float]
    runs_per_task: dict[int, int]
    failures: dict[str, int]  # the reason of each failed run, and how many failed for it
    most_at_once_per_server: int
    most_at_once_per_node: int  # 0 when the nodes' logs name no run
    unfinished: int  # runs queued or running
    lateness_limit: float


def _dump(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False)


def _source() -> Path:
    SOURCE.mkdir(parents=True, exist_ok=True)
    for number in range(3):
        (SOURCE / f"file-{number}.txt").write_text(f"bench file {number}\n")
    return SOURCE


def _due_server(task_id: int, shape: Shape) -> int:
    return (task_id - 1) % shape.servers + 1


def _task(task_id: int, shape: Shape, cron: str) -> str:
    return _dump(
        {
            "id": task_id,
            "user_id": 1,
            "label": f"task {task_id}",
            "remote_server_id": _due_server(task_id, shape),
            "backup_destination_id": 1,
            "source": {"type": "files", "path": str(SOURCE)},
            "schedule": {"custom_cron": cron, "timezone": "UTC"},
            "storage": {"max_backups": 2, "path": f"t{task_id}", "compression": "none"},
        }
    )


def _cron(at: datetime) -> str:
    return f"{at.minute} {at.hour} * * *"


def _write_config(work: Path, login: Login, shape: Shape, destination: Path) -> None:
    sshd = login.sshd
    (work / "servers").mkdir(parents=True)
    (work / "destinations").mkdir()
    (work / "tasks").mkdir()
    users = [{"id": 1, "name": "Bench", "email": "bench@example.com", "timezone": "UTC"}]
    (work / "users.yaml").write_text(_dump(users))
    for server_id in range(1, shape.servers + 1):
        entry = {
            "id": server_id,
            "user_id": 1,
            "label": f"server {server_id}",
            "host": sshd.host,
            "port": sshd.port,
            "username": login.username,
            "private_key": str(sshd.private_key),
            "known_hosts": str(sshd.known_hosts),
            "max_parallel_runs": shape.per_server,
        }
        (work / "servers" / f"{server_id}.yaml").write_text(_dump(entry))
    local = {"id": 1, "user_id": 1, "label": "bench", "type": "local", "path": str(destination)}
    (work / "destinations" / "local.yaml").write_text(_dump(local))
    far = _cron(datetime.now(UTC) + timedelta(hours=12))
    for task_id in range(1, shape.tasks + 1):
        (work / "tasks" / f"{task_id}.yaml").write_text(_task(task_id, shape, far))


def _git(*argv: str | Path, cwd: Path) -> str:
    done = subprocess.run(
        ["git", *map(str, argv)], cwd=cwd, check=True, capture_output=True, text=True
    )
    return done.stdout.strip()


def _commit(work: Path, message: str) -> str:
    _git("add", "-A", cwd=work)
    _git("-c", "user.name=bench", "-c", "user.email=bench@example.com", "commit", "-q", "-m",
         message, cwd=work)  # fmt: skip
    _git("push", "-q", "origin", "HEAD:main", cwd=work)
    return _git("rev-parse", "HEAD", cwd=work)


def _reconciler(*argv: str | Path) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "reconciler", *map(str, argv)],
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout.strip()


@contextmanager
def _node(
    name: str, root: Path, remote: Path, state: str, options: Sequence[str]
) -> Iterator[Node]:
    port = free_port()
    log = root / f"{name}.log"
    argv = [sys.executable, "-m", "reconciler", "serve", "--remote", f"file://{remote}",
            "--branch", "main", "--repo", str(root / f"{name}-clone"), "--state", state,
            "--port", str(port), "--fetch-interval", "3600", *options]  # fmt: skip
    with log.open("ab") as output:
        process = subprocess.Popen(
            argv,
            stdout=output,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        yield Node(name, f"http://127.0.0.1:{port}", process, log)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _applied(node: Node, token: str) -> str | None:
    try:
        response = httpx.get(
            node.url + "/api/sync", headers={"Authorization": f"Bearer {token}"}, timeout=10
        )
    except httpx.TransportError:
        return None
    if response.status_code != 200:
        return None
    revision: str | None = response.json()["data"]["revision"]
    return revision


def _check_alive(nodes: Sequence[Node]) -> None:
    for node in nodes:
        if node.process.poll() is not None:
            tail = node.log.read_text(errors="replace")[-3000:]
            raise SystemExit(f"{node.name} exited with {node.process.returncode}:\n{tail}")


def _wait_applied(nodes: Sequence[Node], token: str, revision: str, within: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < within:
        _check_alive(nodes)
        if all(_applied(node, token) == revision for node in nodes):
            return time.monotonic() - started
        time.sleep(0.2)
    raise SystemExit(f"revision {revision[:12]} not applied by every node within {within:.0f} s")


def _sync(nodes: Sequence[Node], token: str) -> None:
    for node in nodes:
        httpx.post(
            node.url + "/api/sync", headers={"Authorization": f"Bearer {token}"}, timeout=120
        )


def _percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _most_at_once(intervals: Sequence[tuple[datetime, datetime]]) -> int:
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    current = most = 0
    for _, step in edges:
        current += step
        most = max(most, current)
    return most


_STARTED = re.compile(r"reconciler\.runner: task \d+ run (\d+) started")


def _run_nodes(nodes: Sequence[Node]) -> dict[int, str]:
    """Which node ran each run, from the runner's "task T run R started" log lines."""
    found: dict[int, str] = {}
    for node in nodes:
        for match in _STARTED.finditer(node.log.read_text(errors="replace")):
            found[int(match.group(1))] = node.name
    return found


def _outcome(
    state: str,
    due_ids: Sequence[int],
    fire: datetime,
    shape: Shape,
    run_nodes: dict[int, str] | None = None,
) -> Outcome:
    delays: list[float] = []
    runs_per_task = {task_id: 0 for task_id in due_ids}
    by_server: dict[int, list[tuple[datetime, datetime]]] = {}
    by_node: dict[str, list[tuple[datetime, datetime]]] = {}
    failures: dict[str, int] = {}
    unfinished = 0
    store = open_state(state_location(state))
    try:
        found = store.runs.recent_runs(due_ids, fire - timedelta(minutes=1))
        for task_id, summaries in found.items():
            for summary in summaries:
                if summary.trigger != "schedule" or summary.started_at < fire:
                    continue
                runs_per_task[task_id] += 1
                delays.append((summary.started_at - fire).total_seconds())
                unfinished += summary.finished_at is None
                end = summary.finished_at or summary.started_at
                spans = by_server.setdefault(_due_server(task_id, shape), [])
                spans.append((summary.started_at, end))
                if run_nodes and summary.id in run_nodes:
                    by_node.setdefault(run_nodes[summary.id], []).append((summary.started_at, end))
                if summary.status is RunStatus.FAILED:
                    record = store.runs.run(summary.id)
                    reason = (record.reason if record else None) or "no reason"
                    failures[reason] = failures.get(reason, 0) + 1
    finally:
        store.close()
    most = max((_most_at_once(spans) for spans in by_server.values()), default=0)
    per_node = max((_most_at_once(spans) for spans in by_node.values()), default=0)
    return Outcome(delays, runs_per_task, failures, most, per_node, unfinished, 5.0)


def _phase(
    label: str, shape: Shape, nodes: int, state_for: Iterator[str], login: Login, root: Path
) -> Outcome:
    phase_root = root / label
    work = phase_root / "work"
    remote = phase_root / "remote.git"
    phase_root.mkdir()
    _git("init", "-q", "--bare", "-b", "main", remote, cwd=phase_root)
    _git("init", "-q", "-b", "main", work, cwd=phase_root)
    _git("remote", "add", "origin", remote, cwd=work)
    _write_config(work, login, shape, phase_root / "backups")
    first = _commit(work, f"{shape.tasks} tasks, none due")
    state = next(state_for)
    token = _reconciler("token", "create", "--state", state, "--user-id", "1", "--name", "bench")
    options = ["--max-workers", str(shape.workers)]
    with ExitStack() as stack:
        started = [
            stack.enter_context(
                _node(
                    f"node{number}",
                    phase_root,
                    remote,
                    state,
                    [*options, "--node-id", f"node{number}"] if nodes > 1 else options,
                )
            )
            for number in range(1, nodes + 1)
        ]
        ready = _wait_applied(started, token, first, STARTUP_SECONDS)
        print(f"{label}: {nodes} node(s) applied {shape.tasks} tasks in {ready:.1f} s", flush=True)
        fire = (datetime.now(UTC) + timedelta(seconds=shape.lead + 60)).replace(
            second=0, microsecond=0
        )
        due_ids = list(range(1, shape.due + 1))
        for task_id in due_ids:
            (work / "tasks" / f"{task_id}.yaml").write_text(_task(task_id, shape, _cron(fire)))
        second = _commit(work, f"{shape.due} tasks due at {fire:%H:%M}")
        _sync(started, token)
        _wait_applied(started, token, second, STARTUP_SECONDS)
        print(f"{label}: {shape.due} tasks due at {fire:%H:%M:%S} UTC", flush=True)
        time.sleep(max(0.0, (fire - datetime.now(UTC)).total_seconds()))
        _wait_for_runs(state, due_ids, fire, shape, started)
        run_nodes = _run_nodes(started)
    return _outcome(state, due_ids, fire, shape, run_nodes)


def _wait_for_runs(
    state: str, due_ids: Sequence[int], fire: datetime, shape: Shape, nodes: Sequence[Node]
) -> None:
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        _check_alive(nodes)
        outcome = _outcome(state, due_ids, fire, shape)
        ran = all(count >= 1 for count in outcome.runs_per_task.values())
        if ran and not outcome.unfinished:
            time.sleep(5)  # room for a second run of a slot, which must not come
            return
        time.sleep(1)
    print("some due tasks had not run after 10 minutes", flush=True)


def _report(label: str, nodes: int, shape: Shape, outcome: Outcome) -> None:
    workers = shape.workers
    counts = list(outcome.runs_per_task.values())
    never = sum(count == 0 for count in counts)
    twice = sum(count > 1 for count in counts)
    late = sum(delay > outcome.lateness_limit for delay in outcome.delays)
    delays = outcome.delays or [float("nan")]
    print(
        f"{label}: {nodes} node(s) x {workers} workers: start delay median "
        f"{statistics.median(delays):.2f} s, p99 {_percentile(delays, 0.99):.2f} s, "
        f"max {max(delays):.2f} s; {late} of {len(outcome.delays)} later than "
        f"{outcome.lateness_limit:.0f} s; never run {never}, run twice {twice}, failed "
        f"{sum(outcome.failures.values())}; most at once on one server "
        f"{outcome.most_at_once_per_server} (limit {shape.per_server}), on one node "
        f"{outcome.most_at_once_per_node} (limit {workers})",
        flush=True,
    )
    for reason, count in sorted(outcome.failures.items(), key=lambda item: -item[1]):
        print(f"  {count} failed: {reason[:300]}", flush=True)


def _sqlite_states(root: Path) -> Iterator[str]:
    number = 0
    while True:
        number += 1
        yield str(root / f"state-{number}.db")


def _postgres_states(stack: ExitStack) -> Iterator[str]:
    server = stack.enter_context(start_postgres())
    number = 0
    while True:
        number += 1
        server.sql(f"CREATE DATABASE bench{number}")
        yield (
            f"postgresql://{server.username}:{server.password}@{server.host}:{server.port}"
            f"/bench{number}"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--due", type=int, default=200)
    parser.add_argument("--servers", type=int, default=50)
    parser.add_argument("--per-server", type=int, default=4)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--lead", type=float, default=45.0)
    parser.add_argument("--phases", nargs="+", choices=["baseline", "cluster"],
                        default=["baseline", "cluster"])  # fmt: skip
    parser.add_argument("--as-root", action="store_true")
    args = parser.parse_args()
    shape = Shape(args.tasks, args.due, args.servers, args.per_server, args.workers, args.lead)
    _source()
    with ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-cluster-")))
        sshd = stack.enter_context(start_sshd(root / "sshd"))
        if args.as_root:
            login = Login(sshd, sshd.username)
        else:
            user = stack.enter_context(shell_user("sh"))
            user.authorize(sshd)
            login = Login(sshd, user.username)
        print(
            f"{shape.tasks} tasks on {shape.servers} server entries (max_parallel_runs "
            f"{shape.per_server}), {shape.due} due in one minute, logging in as {login.username}",
            flush=True,
        )
        if "baseline" in args.phases:
            outcome = _phase("baseline", shape, 1, _sqlite_states(root), login, root)
            _report("baseline", 1, shape, outcome)
        if "cluster" in args.phases:
            states = (
                _postgres_states(stack) if args.backend == "postgresql" else _sqlite_states(root)
            )
            outcome = _phase("cluster", shape, args.nodes, states, login, root)
            _report(f"cluster ({args.backend})", args.nodes, shape, outcome)


if __name__ == "__main__":
    main()
