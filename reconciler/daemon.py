"""The composition root: builds every part, wires them together, runs them. No logic of its own."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from reconciler.api import create_app
from reconciler.engine import Engine
from reconciler.executor import CONNECT_TIMEOUT, STALL_TIMEOUT
from reconciler.gitstore import GitStore
from reconciler.history import History, RunRecord
from reconciler.metrics import install_operational_routes
from reconciler.models import ResolvedTask
from reconciler.restore import restore
from reconciler.runner import Runner, RunRequest
from reconciler.scheduler import Scheduler
from reconciler.secrets import Secrets
from reconciler.types import ReconcilerError, RunStatus
from reconciler.watcher import ref_changes

log = logging.getLogger("reconciler.daemon")

# How often `reconciler run` looks for new log lines of the run it follows.
FOLLOW_SECONDS = 0.5


class SystemClock:
    """The only place the daemon reads the wall clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)


@dataclass(frozen=True)
class Settings:
    repo: Path
    state: Path
    host: str = "127.0.0.1"
    port: int = 8080
    resync_interval: float = 60.0
    catch_up_deadline: timedelta = timedelta(hours=12)
    max_workers: int = 4
    run_timeout: timedelta = timedelta(hours=6)
    connect_timeout: float = CONNECT_TIMEOUT
    stall_timeout: float = STALL_TIMEOUT
    known_hosts: Path | None = None
    push: bool = False


def secrets_path(state: Path) -> Path:
    """The API's secrets live beside the state database, never in git."""
    return state.with_name(state.name + ".secrets.json")


@dataclass
class Daemon:
    settings: Settings
    clock: SystemClock
    history: History
    secrets: Secrets
    store: GitStore
    runner: Runner
    scheduler: Scheduler
    engine: Engine
    app: FastAPI
    dispatch: Callable[[ResolvedTask, datetime], None]


def build(settings: Settings) -> Daemon:
    settings.state.parent.mkdir(parents=True, exist_ok=True)
    clock = SystemClock()
    history = History(settings.state)
    secrets = Secrets(secrets_path(settings.state), os.environ)
    store = GitStore(settings.repo)
    runner = Runner(
        history=history,
        secrets=secrets,
        clock=clock,
        max_workers=settings.max_workers,
        default_timeout=settings.run_timeout,
        known_hosts=settings.known_hosts,
        connect_timeout=settings.connect_timeout,
        stall_timeout=settings.stall_timeout,
    )
    dispatch = scheduled_dispatch(history, runner.dispatch)
    scheduler = Scheduler(clock, dispatch)
    engine = Engine(store=store, scheduler=scheduler, history=history, clock=clock)
    app = create_app(
        engine=engine,
        history=history,
        secrets=secrets,
        runner=runner,
        clock=clock,
        push=settings.push,
    )
    install_operational_routes(app, engine=engine, runner=runner)
    return Daemon(
        settings, clock, history, secrets, store, runner, scheduler, engine, app, dispatch
    )


def scheduled_dispatch(
    history: History, dispatch: Callable[[ResolvedTask, datetime], None]
) -> Callable[[ResolvedTask, datetime], None]:
    """Remember each fired slot before handing it on, so a restart never fires it again."""

    def fire(task: ResolvedTask, slot: datetime) -> None:
        history.record_fire(task.id, slot)
        dispatch(task, slot)

    return fire


async def serve(settings: Settings) -> None:
    daemon = build(settings)
    server = uvicorn.Server(
        uvicorn.Config(
            daemon.app, host=settings.host, port=settings.port, log_config=None, access_log=False
        )
    )
    stop = asyncio.Event()
    workers: list[asyncio.Task[None]] = []

    def shut_down(_signal: int, _frame: object) -> None:
        server.should_exit = True

    # uvicorn handles SIGINT/SIGTERM while it serves, then raises the signal again to whatever
    # handler was there before: this one, so runs and the state store close before we exit.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, shut_down)
    try:
        await daemon.engine.sync()
        # The config set's objects live as long as the daemon: keep the cyclic GC from scanning
        # them again on every collection (it made 10,000-task reconciles several times slower).
        gc.freeze()
        # Before anything can start a run: runs a crash left behind end failed, partials removed.
        recovered = daemon.runner.recover(daemon.engine.desired.tasks.values())
        if recovered:
            log.warning("marked %d interrupted run(s) as failed", len(recovered))
        for task, slot in daemon.engine.catch_up(settings.catch_up_deadline):
            log.info(
                "task %d missed its %s run while the daemon was down: running it now", task.id, slot
            )
            daemon.dispatch(task, slot)
        workers = [
            asyncio.create_task(daemon.scheduler.run(), name="scheduler"),
            asyncio.create_task(_on_commits(daemon, stop), name="watch"),
            asyncio.create_task(
                _resync_every(settings.resync_interval, daemon.engine), name="resync"
            ),
        ]
        log.info(
            "serving %s (%d tasks) on http://%s:%d",
            settings.repo,
            len(daemon.engine.desired.tasks),
            settings.host,
            settings.port,
        )
        await server.serve()
    finally:
        stop.set()
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        await daemon.runner.close()
        daemon.history.close()


async def run_once(settings: Settings, task_id: int) -> bool:
    """`reconciler run`: one task of the branch head, now, in the foreground; True on success."""
    daemon = build(settings)
    try:
        await daemon.engine.sync()
        task = _task(daemon, task_id)
        outcome = daemon.runner.request_run(task, trigger="cli")
        if outcome is not RunRequest.ACCEPTED:
            raise DaemonError(f"task {task_id}: {outcome.message}")
        run = await _follow(daemon, task_id)
        print(f"run {run.id}: {run.status}" + (f" ({run.reason})" if run.reason else ""))
        return run.status is RunStatus.SUCCESSFUL
    finally:
        await daemon.runner.close()
        daemon.history.close()


async def _follow(daemon: Daemon, task_id: int) -> RunRecord:
    """Print the task's run's log lines as they are stored, until it ends; return the finished run.

    `request_run` records the run before it accepts it, so the task's latest run is this one.
    """
    printed = 0
    while True:
        try:
            await asyncio.to_thread(daemon.runner.wait, task_id, FOLLOW_SECONDS)
            finished = True
        except TimeoutError:
            finished = False
        run = daemon.history.latest_run(task_id)
        assert run is not None
        print(run.output[printed:], end="", flush=True)
        printed = len(run.output)
        if finished:
            return run


def restore_backup(settings: Settings, task_id: int, run_id: int | None, to: Path) -> Path:
    """`reconciler restore`: the given run's backup (default: the newest) into `to`."""
    daemon = build(settings)
    try:
        asyncio.run(daemon.engine.sync())
        task = _task(daemon, task_id)
        run = None
        if run_id is not None:
            run = daemon.history.run(run_id)
            if run is None or run.task_id != task_id:
                raise DaemonError(f"task {task_id} has no run {run_id}")
        return restore(task, run=run, to=to, history=daemon.history, secrets=daemon.secrets)
    finally:
        daemon.history.close()


class DaemonError(ReconcilerError):
    """A request the config set or state cannot satisfy; the message says why."""


def _task(daemon: Daemon, task_id: int) -> ResolvedTask:
    task = daemon.engine.desired.tasks.get(task_id)
    if task is None:
        raise DaemonError(f"task {task_id} is not in the config set at {daemon.settings.repo}")
    return task


async def _on_commits(daemon: Daemon, stop: asyncio.Event) -> None:
    async for _ in ref_changes(daemon.store.git_dir, stop):
        await _logged(daemon.engine.sync)


async def _resync_every(seconds: float, engine: Engine) -> None:
    """The periodic full resync: repairs anything a missed file event would leave behind."""
    while True:
        await asyncio.sleep(seconds)
        await _logged(lambda: engine.sync(full=True))


async def _logged(action: Callable[[], Awaitable[object]]) -> None:
    try:
        await action()
    except Exception:
        # A failed reconcile (say, git unreadable mid-gc) leaves the running schedule as it was.
        log.exception("reconcile failed; the running schedule is unchanged")
