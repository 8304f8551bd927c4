"""Does a large write stall the daemon? /healthz latency while a 1 MiB task file is edited.

Starts `reconciler serve` in its own process on a config set whose task 2 carries about 1 MiB of
comments, then measures, from this process, /healthz requests one after another (every 5 ms):
first with nothing else going on (the baseline), then while PUTs relabel that task back to back.
Each PUT parses, edits and renders the whole file and commits it; none of that may run on the
daemon's event loop, so /healthz should barely notice.

Run: .venv/bin/python -m bench.bench_write_stall [--seconds 20] [--file-kb 1000]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx

from bench.bench_api import config_set
from tests.daemonproc import create_token, serving
from tests.gitrepo import init_repo

TASK = "tasks/2-task.yaml"  # user 1 owns the even ids


def health_latencies(
    url: str,
    seconds: float,
) -> list[float]:
    latencies = []
    with httpx.Client(base_url=url, timeout=30) as client:
        ends = time.perf_counter() + seconds
        while time.perf_counter() < ends:
            started = time.perf_counter()
            client.get("/healthz").raise_for_status()
            latencies.append(time.perf_counter() - started)
            time.sleep(0.005)
    return latencies


def summary(name: str, latencies: list[float]) -> float:
    ordered = sorted(latencies)
    p99 = ordered[max(0, int(len(ordered) * 0.99) - 1)]
    print(
        f"{name:<34} p50 {statistics.median(ordered) * 1000:7.1f} ms  p99 {p99 * 1000:7.1f} ms"
        f"  max {ordered[-1] * 1000:7.1f} ms  ({len(ordered)} requests)"
    )
    return p99


def main(seconds: float, file_kb: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        files = config_set(10)
        padding = "# " + "n" * 60 + "\n"
        files[TASK] += padding * (file_kb * 1000 // len(padding))
        repo = Path(tmp) / "config"
        init_repo(repo, files)
        state = Path(tmp) / "state" / "state.db"
        token = create_token(state)
        with serving(repo, state, token, Path(tmp) / "daemon.log") as daemon:
            size = (repo / TASK).stat().st_size
            print(f"task file {size / 1024:.0f} KiB; daemon pid {daemon.process.pid}")
            baseline = summary(
                "GET /healthz, idle (baseline)", health_latencies(daemon.url, seconds)
            )
            stop = threading.Event()
            puts: list[float] = []

            def edit() -> None:
                headers = {"Authorization": f"Bearer {token}"}
                with httpx.Client(base_url=daemon.url, headers=headers, timeout=120) as client:
                    while not stop.is_set():
                        started = time.perf_counter()
                        client.put("/api/backup-tasks/2", json={"label": f"edit {len(puts)}"})
                        puts.append(time.perf_counter() - started)

            editor = threading.Thread(target=edit)
            editor.start()
            during = health_latencies(daemon.url, seconds)
            stop.set()
            editor.join()
            p99 = summary("GET /healthz, during 1 MiB PUTs", during)
            print(f"{len(puts)} PUTs, median {statistics.median(puts) * 1000:.0f} ms each")
            print(f"p99 during / p99 idle: {p99 / baseline:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each phase")
    parser.add_argument("--file-kb", type=int, default=1000, help="size of the edited file")
    arguments = parser.parse_args()
    main(arguments.seconds, arguments.file_kb)
