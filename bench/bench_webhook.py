"""From a person's `git push` to the scheduler, woken by the git server's webhook.

A real daemon process (`reconciler serve --remote file://... --webhook-secret-file FILE` on
127.0.0.1, `--fetch-interval 3600` so only the webhook fetches) follows a real bare repository;
a person's clone of it commits a task's new label and pushes. Each of `--pushes` rounds:
- `git push` of that commit (its own time, for scale);
- from the push returning: the webhook POST (signed `X-Hub-Signature-256`, answered 202), then
  `GET /api/sync` polled until `revision` is the pushed commit, which the daemon reports once
  the scheduler holds it; the push-to-applied time, and the webhook's answer time within it;
- the baseline, in the same round: `git fetch` of the same remote into another clone (the one
  git step the daemon's fetch cannot do without).

Prints medians and p90 of each. The issue's target: a push reaches the scheduler within a
second of the webhook.

Run: .venv/bin/python -m bench.bench_webhook [--pushes 15] [--tasks 50]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import yaml

from bench.bench_api import config_set
from reconciler.api.hooks import signature
from tests.daemonproc import RunningDaemon, create_token, serving
from tests.gitrepo import commit_files, git, init_repo

SECRET = "bench webhook secret"  # noqa: S105 (a throwaway, for this run only)
EVENT = b'{"ref": "refs/heads/main"}'
TASK_PATH = "tasks/1-task.yaml"
POLL = 0.005
WITHIN = 30.0


def relabel(person: Path, number: int) -> str:
    data = yaml.safe_load((person / TASK_PATH).read_text())
    data["label"] = f"pushed {number}"
    return commit_files(
        person, {TASK_PATH: yaml.safe_dump(data, sort_keys=False)}, f"push {number}"
    )


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def one_round(
    daemon: RunningDaemon, hooks: httpx.Client, person: Path, baseline: Path, number: int
) -> tuple[float, float, float, float]:
    """(git push, webhook answer, push returned -> applied, baseline git fetch), seconds."""
    sha = relabel(person, number)
    push = timed(lambda: git(person, "push", "-q", "origin", "main"))
    started = time.perf_counter()
    answer = hooks.post(
        "/api/hooks/git",
        content=EVENT,
        headers={"X-Hub-Signature-256": signature(EVENT, SECRET), "X-GitHub-Event": "push"},
    )
    answered = time.perf_counter() - started
    assert answer.status_code == 202, answer.text
    while daemon.get("/api/sync")["data"]["revision"] != sha:
        if time.perf_counter() - started > WITHIN:
            raise AssertionError(f"{sha} not applied within {WITHIN} s")
        time.sleep(POLL)
    applied = time.perf_counter() - started
    fetch = timed(lambda: git(baseline, "fetch", "-q", "origin"))
    return push, answered, applied, fetch


def summary(values: list[float]) -> str:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    return f"median {statistics.median(values) * 1000:7.1f} ms   p90 {p90 * 1000:7.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pushes", type=int, default=15)
    parser.add_argument("--tasks", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-webhook-") as tmp:
        root = Path(tmp)
        person, bare = root / "person", root / "upstream.git"
        init_repo(person, config_set(args.tasks))
        git(root, "init", "-q", "--bare", "-b", "main", str(bare))
        git(person, "remote", "add", "origin", str(bare))
        git(person, "push", "-q", "origin", "main")
        url = f"file://{bare}"
        git(root, "clone", "-q", url, str(root / "baseline"))
        secret = root / "webhook-secret"
        secret.write_text(SECRET + "\n")
        state = root / "state" / "state.db"
        token = create_token(state)
        options: list[str | Path] = [
            "--remote",
            url,
            "--webhook-secret-file",
            secret,
            "--fetch-interval",
            "3600",
        ]
        rounds = []
        with (
            serving(root / "clone", state, token, root / "daemon.log", options=options) as daemon,
            httpx.Client(base_url=daemon.url, timeout=10) as hooks,
        ):
            for number in range(args.pushes):
                rounds.append(one_round(daemon, hooks, person, root / "baseline", number))
        pushes, answers, applied, fetches = (list(column) for column in zip(*rounds, strict=True))
        print(f"{args.pushes} pushes, {args.tasks} tasks, {url} (daemon in its own process)")
        print(f"git push (person)                       {summary(pushes)}")
        print(f"webhook POST answered (202)             {summary(answers)}")
        print(f"push returned -> scheduler has it       {summary(applied)}")
        print(f"baseline: git fetch of the same remote  {summary(fetches)}")
        ratio = statistics.median(applied) / statistics.median(fetches)
        print(f"push -> applied / git fetch (medians)   {ratio:.1f}x")


if __name__ == "__main__":
    main()
