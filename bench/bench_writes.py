"""API write benchmark: PUT with wrk against the daemon, beside a `git commit` loop, in one run.

Generates a config repository of 1,000 tasks (two users; the caller owns 500), starts the daemon
exactly as `reconciler serve` does (`daemon.running`: ref watch, resync, scheduler) under uvicorn
on 127.0.0.1, and drives `PUT /api/backup-tasks/{id}` with wrk (`-t2 -c8` by default): a Lua
script gives every request its own body and, until the 500 run out, its own task. Commits are
counted on the branch (one per request), reconciles from the engine's counter.

The baseline, on a second copy of the same repository: a serial shell loop of a file edit and
`git commit -q -a -m` (what a person's commits cost with the git CLI on that repository). The two
sides alternate for a few rounds, so both see the same load on a shared machine; the figures
are the medians and their ratio.

Run: .venv/bin/python -m bench.bench_writes [--rounds 3] [--seconds 10] [--connections 8]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import uvicorn

from bench.bench_api import config_set, free_port
from reconciler.daemon import Settings, running
from tests.gitrepo import git, init_repo

TASKS = 1000
_LUA = """
local counter = 0
local threads = 0
function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end
function init(args)
  ids = {%(ids)s}
  headers = {["Authorization"] = "Bearer %(token)s", ["Content-Type"] = "application/json"}
end
function request()
  counter = counter + 1
  local n = counter * %(threads)d + tid
  local body = '{"label": "edit %(round)d ' .. tid .. ' ' .. counter .. '"}'
  return wrk.format("PUT", "/api/backup-tasks/" .. ids[n %% #ids + 1], headers, body)
end
"""


def _commits(repo: Path) -> int:
    return int(git(repo, "rev-list", "--count", "HEAD"))


def git_commit_loop(repo: Path, commits: int) -> float:
    """Commits/s of a serial shell loop: append a line to a task file, `git commit -q -a`."""
    script = (
        'for i in $(seq 1 "$1"); do'
        ' f="tasks/$(( (i % 500) * 2 + 2 ))-task.yaml";'
        ' printf "# edit %s\\n" "$i" >> "$f";'
        " git -c user.name=Bench -c user.email=bench@example.com -c commit.gpgsign=false"
        ' -c core.hooksPath=/dev/null commit -q -a -m "edit $i";'
        " done"
    )
    before = _commits(repo)
    started = time.perf_counter()
    subprocess.run(["bash", "-c", script, "loop", str(commits)], cwd=repo, check=True)
    elapsed = time.perf_counter() - started
    made = _commits(repo) - before
    assert made == commits, f"the loop made {made} commits, not {commits}"
    return made / elapsed


async def wrk_put(
    script: Path, port: int, seconds: int, threads: int, connections: int
) -> tuple[float, str]:
    """(seconds taken, wrk's summary) of one wrk run."""
    started = time.perf_counter()
    wrk = await asyncio.create_subprocess_exec(
        "wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "-s", str(script),
        f"http://127.0.0.1:{port}/", stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    output, _ = await wrk.communicate()
    summary = output.decode()
    if wrk.returncode != 0 or "Non-2xx" in summary or "Socket errors" in summary:
        raise SystemExit(f"wrk failed or got errors:\n{summary}")
    return time.perf_counter() - started, summary


async def main(
    rounds: int, seconds: int, threads: int, connections: int, loop_commits: int
) -> None:
    """Alternates the two sides, so both see the same load on a shared machine."""
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (scripts/setup installs it)")
    print(
        f"{TASKS} tasks (the caller's 500 edited), wrk -t{threads} -c{connections} -d{seconds}s,"
        f" a serial loop of {loop_commits} git commits; {rounds} rounds"
    )
    loops: list[float] = []
    puts: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        files = config_set(TASKS)
        baseline_repo, repo, state = Path(tmp) / "loop", Path(tmp) / "config", Path(tmp) / "s.db"
        init_repo(baseline_repo, files)
        init_repo(repo, files)
        port = free_port()
        async with running(Settings(repo=repo, state=state, port=port)) as daemon:
            _, token = daemon.state.tokens.create_token(1, "bench", ["*"], datetime.now(UTC))
            own = sorted(task_id for task_id in daemon.engine.desired.tasks if task_id % 2 == 0)
            script = Path(tmp) / "put.lua"
            lua = {"ids": ",".join(map(str, own)), "token": token, "threads": threads}
            server = uvicorn.Server(
                uvicorn.Config(
                    daemon.app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"
                )
            )
            serving = asyncio.create_task(server.serve())
            while not server.started:
                await asyncio.sleep(0.01)
            for round_number in range(1, rounds + 1):
                loops.append(await asyncio.to_thread(git_commit_loop, baseline_repo, loop_commits))
                # A body sent again changes nothing and makes no commit: each round its own.
                script.write_text(_LUA % {**lua, "round": round_number})
                before, reconciles = _commits(repo), daemon.engine.reconciles
                elapsed, summary = await wrk_put(script, port, seconds, threads, connections)
                # The ref watch's event for the last commit comes after wrk is done: count it.
                await asyncio.sleep(0.5)
                commits = _commits(repo) - before
                puts.append(commits / elapsed)
                latency = re.search(r"Latency\s+(\S+)", summary)
                print(
                    f"round {round_number}: git commit loop {loops[-1]:6.1f} commits/s,"
                    f" PUT {puts[-1]:6.1f} commits/s ({commits} commits,"
                    f" {daemon.engine.reconciles - reconciles} reconciles, mean latency"
                    f" {latency[1] if latency else '?'}), ratio {puts[-1] / loops[-1]:.2f}"
                )
            server.should_exit = True
            await serving
    loop_rate, put_rate = statistics.median(loops), statistics.median(puts)
    print(f"median git commit loop  {loop_rate:7.1f} commits/s")
    print(f"median PUT (wrk)        {put_rate:7.1f} commits/s")
    print(f"ratio of the medians    {put_rate / loop_rate:7.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10, help="wrk's duration per round")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--loop-commits", type=int, default=200, help="per round")
    arguments = parser.parse_args()
    asyncio.run(
        main(
            arguments.rounds,
            arguments.seconds,
            arguments.threads,
            arguments.connections,
            arguments.loop_commits,
        )
    )
