"""A real API over a real config repository: the daemon's own wiring and start-up
(`daemon.running`: git, GitStore, Engine, Scheduler and its workers, the state store, Secrets,
Runner, the FastAPI app with /healthz and /metrics), driven in-process through httpx. Only the
clock is fake.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from reconciler import daemon
from reconciler.engine import Engine
from reconciler.runner import Runner
from reconciler.secrets import Secrets
from reconciler.state import StateStore
from tests import configset
from tests.clock import FakeClock
from tests.gitrepo import git, init_repo

START = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)  # London is on GMT: local == UTC

COMMENTED_TASK = """\
# Nightly dump of the shop database.
id: 7
user_id: 1
label: 'Shop database'   # shown on the dashboard

remote_server_id: 1
backup_destination_id: 1

# What to back up
source:
  type: database
  database_name: shop
  excluded_tables: [sessions, cache]

# When: after the nightly import
schedule:
  frequency: weekly
  weekday: sunday
  time: "03:00"
  timezone: Europe/Paris

storage:
  max_backups: 4   # a month of Sundays
  path: shop
notification_stream_ids: [1]
"""


def notification(stream_id: int, user_id: int) -> str:
    return configset.dump(
        {
            "id": stream_id,
            "user_id": user_id,
            "label": f"stream {stream_id}",
            "type": "webhook",
            "url": "json://127.0.0.1:9/hook",
        }
    )


def config_files() -> dict[str, str]:
    """Users 1 (London) and 2 (New York), each with a server, a destination, a stream, a task;
    user 1 also owns the hand-written task 7 in a sub-folder."""
    return {
        **configset.base_files(),
        # Port 1: nothing listens there, so a run that starts fails at once, touching nothing.
        "servers/one.yaml": configset.server(1, 1, port=1),
        "servers/two.yaml": configset.server(2, 2, port=1),
        "notifications/one.yaml": notification(1, 1),
        "notifications/two.yaml": notification(2, 2),
        "tasks/1-first.yaml": configset.task(1, 1),
        "tasks/2-grace.yaml": configset.task(2, 2),
        "tasks/shop/7-shop-database.yaml": COMMENTED_TASK,
    }


@dataclass
class ApiRig:
    daemon: daemon.Daemon
    repo: Path
    app: FastAPI
    client: httpx.AsyncClient
    engine: Engine
    state: StateStore
    secrets: Secrets
    secrets_path: Path
    runner: Runner
    clock: FakeClock
    _tokens: dict[tuple[int, tuple[str, ...]], str] = field(default_factory=dict)

    def auth(self, user_id: int = 1, abilities: Sequence[str] = ("*",)) -> dict[str, str]:
        key = (user_id, tuple(abilities))
        if key not in self._tokens:
            _, plaintext = self.state.tokens.create_token(
                user_id, "test", abilities, self.clock.now()
            )
            self._tokens[key] = plaintext
        return {"Authorization": f"Bearer {self._tokens[key]}"}

    async def get(self, url: str, user_id: int = 1, **kwargs: Any) -> httpx.Response:
        return await self.client.get(url, headers=self.auth(user_id), **kwargs)

    async def post(self, url: str, body: Any = None, user_id: int = 1) -> httpx.Response:
        return await self.client.post(url, json=body, headers=self.auth(user_id))

    async def put(self, url: str, body: Any, user_id: int = 1) -> httpx.Response:
        return await self.client.put(url, json=body, headers=self.auth(user_id))

    async def delete(self, url: str, user_id: int = 1) -> httpx.Response:
        return await self.client.delete(url, headers=self.auth(user_id))

    def file(self, path: str) -> str:
        return (self.repo / path).read_text()

    def commits(self) -> list[str]:
        """Subjects of the branch's commits, newest first."""
        return git(self.repo, "log", "--format=%s").splitlines()

    def work_tree_status(self) -> str:
        return git(self.repo, "status", "--porcelain", "--untracked-files=all")


def settings(tmp: Path, *, push: bool = False, **overrides: Any) -> daemon.Settings:
    """`overrides`: any other Settings field (`remote=...`)."""
    return daemon.Settings(
        repo=tmp / "config",
        state=tmp / "state.db",
        max_workers=2,
        connect_timeout=5.0,
        push=push,
        **overrides,
    )


def _rig(built: daemon.Daemon, clock: FakeClock) -> ApiRig:
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=built.app), base_url="http://testserver"
    )
    return ApiRig(
        built,
        built.settings.repo,
        built.app,
        client,
        built.engine,
        built.state,
        built.secrets,
        daemon.secrets_path(Path(built.settings.state)),
        built.runner,
        clock,
    )


def _config_repo(tmp: Path, files: Mapping[str, str] | None, clone: bool) -> None:
    """The config repository is `tmp/config`, made from `files` (or already there with `clone`)."""
    if not clone:
        init_repo(tmp / "config", config_files() if files is None else files)


def build(tmp: Path, files: Mapping[str, str] | None = None) -> ApiRig:
    """Every part, wired by `daemon.build`; nothing started, the engine has not synced yet. For
    a caller that drives the app from other event loops (see `api_rig` for the running daemon)."""
    _config_repo(tmp, files, clone=False)
    clock = FakeClock(START)
    return _rig(daemon.build(settings(tmp), clock=clock, environ={}), clock)


async def close(rig: ApiRig) -> None:
    await rig.client.aclose()
    await daemon.close(rig.daemon)


@asynccontextmanager
async def api_rig(
    tmp: Path,
    files: Mapping[str, str] | None = None,
    *,
    clone: bool = False,
    push: bool = False,
    **overrides: Any,
) -> AsyncIterator[ApiRig]:
    """The daemon started as `reconciler serve` starts it (first reconcile, recovery, catch-up,
    scheduler, ref watch...), over the config repository `tmp/config`, made from `files` (or
    already there with `clone`); `overrides`: other Settings fields."""
    _config_repo(tmp, files, clone)
    clock = FakeClock(START)
    config = settings(tmp, push=push, **overrides)
    async with daemon.running(config, clock=clock, environ={}) as running:
        rig = _rig(running, clock)
        try:
            yield rig
        finally:
            await rig.client.aclose()
