"""API reads against their floor: the daemon's list and show beside a minimal FastAPI app.

One config set of 500 tasks of one user in a real git repository, and a real state store. Two
servers, each in its own process under the same uvicorn settings as `reconciler serve` (uvloop,
httptools, no access log), on 127.0.0.1:
- the daemon: its own wiring (`daemon.build`), reconciled, the file-time index built;
- the floor: a minimal FastAPI app that answers the same two bodies (the first list page of 15
  tasks, one task), taken from the daemon once and held in memory as the API's pydantic models,
  behind a dict lookup of the token's SHA-256 hash.

wrk (`-t2 -c8`, Debian package `wrk`) drives each URL on both servers in turn, `--rounds` times;
it prints req/s of each (medians over the rounds) and the daemon's ratio to the floor.

Run: .venv/bin/python -m bench.bench_reads [--tasks 500] [--seconds 10] [--rounds 3]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import httpx
import uvicorn
from fastapi import Depends, FastAPI, Header, HTTPException, Request

from bench.bench_api import config_set, free_port
from reconciler.api import schemas
from reconciler.state import open_state
from tests.gitrepo import init_repo

USER_ID = 1


def uvicorn_config(app: FastAPI, port: int) -> uvicorn.Config:
    """`reconciler serve`'s uvicorn settings."""
    return uvicorn.Config(
        app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="off"
    )


def caller(request: Request, authorization: Annotated[str, Header()] = "") -> int:
    """The floor's token check: the user whose token's hash is in the app's dict."""
    digest = hashlib.sha256(authorization.removeprefix("Bearer ").encode()).hexdigest()
    user: int | None = request.app.state.token_hashes.get(digest)
    if user is None:
        raise HTTPException(401)
    return user


def floor_app(token_hashes: dict[str, int], page: dict[str, Any], task: dict[str, Any]) -> FastAPI:
    """The minimal app: the same bodies, from memory, behind a dict lookup of the token's hash."""
    app = FastAPI()
    app.state.token_hashes = token_hashes
    meta = {("from_" if key == "from" else key): value for key, value in page["meta"].items()}
    listed = schemas.TaskPage.model_validate({**page, "meta": meta})
    shown = schemas.TaskResponse.model_validate(task)

    @app.get("/api/backup-tasks", response_model=schemas.TaskPage)
    async def list_tasks(_user: Annotated[int, Depends(caller)]) -> schemas.TaskPage:
        return listed

    @app.get("/api/backup-tasks/{task_id}", response_model=schemas.TaskResponse)
    async def show_task(task_id: int, _user: Annotated[int, Depends(caller)]) -> Any:
        if task_id != shown.data.id:
            raise HTTPException(404)
        return shown

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def serve_daemon(repo: Path, state: Path, port: int) -> None:
    import asyncio

    from reconciler.daemon import Settings, build, close

    async def main() -> None:
        daemon = build(Settings(repo=repo, state=state, port=port))
        await daemon.engine.sync()
        while daemon.state.file_times.file_times_revision() != daemon.engine.revision:
            await asyncio.sleep(0.01)
        await uvicorn.Server(uvicorn_config(daemon.app, port)).serve()
        await close(daemon)

    asyncio.run(main())


def serve_floor(bodies: Path, port: int) -> None:
    loaded = json.loads(bodies.read_text())
    app = floor_app({loaded["token_hash"]: USER_ID}, loaded["page"], loaded["task"])
    uvicorn.Server(uvicorn_config(app, port)).run()


def start(*arguments: str, port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen([sys.executable, "-m", "bench.bench_reads", *arguments])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"{arguments[1]} did not start on port {port}")


def wrk(url: str, token: str, seconds: float) -> float:
    """req/s of `wrk -t2 -c8` on `url`; every answer must be 2xx."""
    result = subprocess.run(
        ["wrk", "-t2", "-c8", f"-d{seconds:g}s", "-H", f"Authorization: Bearer {token}", url],
        capture_output=True,
        text=True,
        check=True,
    )
    if "Non-2xx" in result.stdout:
        raise RuntimeError(f"{url}: answers that were not 2xx:\n{result.stdout}")
    found = re.search(r"Requests/sec:\s+([0-9.]+)", result.stdout)
    if found is None:
        raise RuntimeError(f"wrk printed no rate:\n{result.stdout}{result.stderr}")
    return float(found.group(1))


def main(tasks: int, seconds: float, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        repo, state, bodies = Path(tmp) / "config", Path(tmp) / "state.db", Path(tmp) / "bodies"
        init_repo(repo, config_set(tasks, users=1))
        store = open_state(state)
        _, token = store.tokens.create_token(USER_ID, "bench", ["*"], datetime.now(UTC))
        store.close()
        daemon_port, floor_port = free_port(), free_port()
        daemon = start(
            "--serve", "daemon", "--dir", tmp, "--port", str(daemon_port), port=daemon_port
        )
        floor = None
        try:
            headers = {"Authorization": f"Bearer {token}"}
            base = f"http://127.0.0.1:{daemon_port}"
            page = httpx.get(f"{base}/api/backup-tasks", headers=headers).json()
            shown_id = page["data"][0]["id"]
            task = httpx.get(f"{base}/api/backup-tasks/{shown_id}", headers=headers).json()
            token_hash = hashlib.sha256(token.encode()).hexdigest()
            bodies.write_text(json.dumps({"token_hash": token_hash, "page": page, "task": task}))
            floor = start(
                "--serve", "floor", "--dir", tmp, "--port", str(floor_port), port=floor_port
            )
            for name, port in (("daemon", daemon_port), ("floor", floor_port)):
                answered = httpx.get(f"http://127.0.0.1:{port}/api/backup-tasks", headers=headers)
                assert answered.json() == page, f"the {name}'s list page differs: {answered.text}"
            paths = {"list": "/api/backup-tasks", "show": f"/api/backup-tasks/{shown_id}"}
            rates: dict[tuple[str, str], list[float]] = {}
            for _ in range(rounds):
                for kind, path in paths.items():
                    for name, port in (("daemon", daemon_port), ("floor", floor_port)):
                        rate = wrk(f"http://127.0.0.1:{port}{path}", token, seconds)
                        rates.setdefault((kind, name), []).append(rate)
            print(f"{tasks} tasks of one user, wrk -t2 -c8 -d{seconds:g}s, {rounds} round(s)")
            for kind in paths:
                own = statistics.median(rates[kind, "daemon"])
                base_rate = statistics.median(rates[kind, "floor"])
                each = ", ".join(
                    f"{d:.0f}/{f:.0f}"
                    for d, f in zip(rates[kind, "daemon"], rates[kind, "floor"], strict=True)
                )
                print(
                    f"{kind}: daemon {own:7.0f} req/s, floor {base_rate:7.0f} req/s,"
                    f" ratio {own / base_rate:.2f}   (daemon/floor per round: {each})"
                )
        finally:
            for process in (daemon, floor):
                if process is not None:
                    process.terminate()
                    process.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=10.0, help="per wrk run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--serve", choices=["daemon", "floor"], help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.serve == "daemon":
        serve_daemon(arguments.dir / "config", arguments.dir / "state.db", arguments.port)
    elif arguments.serve == "floor":
        serve_floor(arguments.dir / "bodies", arguments.port)
    else:
        main(arguments.tasks, arguments.seconds, arguments.rounds)
