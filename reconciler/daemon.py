"""The composition root: builds every part, wires them together, runs them. No logic of its own.

`running` is the daemon's whole life, done once: build, start in order, yield, close in order.
`reconciler serve` serves its app; the API tests drive the same app in-process.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import socket
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from reconciler.agecrypt import load_identities
from reconciler.backup import DEFAULT_KEEP_RUN_AGE, DEFAULT_KEEP_RUNS, BackupPipeline
from reconciler.desired import node_local_destinations
from reconciler.destinations import DestinationError
from reconciler.destinations.restic import check_restic_version
from reconciler.drill import DrillPipeline
from reconciler.engine import Engine
from reconciler.executor import CONNECT_TIMEOUT, STALL_TIMEOUT
from reconciler.gitstore import GitStore
from reconciler.headtrust import open_trust
from reconciler.models import ResolvedTask, ResticDestination
from reconciler.repolocks import RepositoryLocks
from reconciler.resticprune import (
    PruneResult,
    ResticPrunes,
    prune_repository,
    restic_destinations,
)
from reconciler.runner import Admission, Runner
from reconciler.runtally import RunTally
from reconciler.scheduler import Fire, Scheduler, drill_schedule
from reconciler.secrets import Secrets
from reconciler.signatures import SigningKey
from reconciler.slotclaims import DEFAULT_LEASE, SlotClaims
from reconciler.state import StateStore, open_state
from reconciler.state.location import StateLocation, describe_location, is_postgres_url
from reconciler.taskhistory import TaskHistory
from reconciler.types import (
    DEFAULT_MAX_BODY_BYTES,
    TOKEN_USE_FLUSH_SECONDS,
    Clock,
    ReconcilerError,
)

if TYPE_CHECKING:
    from fastapi import FastAPI

    from reconciler.api.reader import StateReader
    from reconciler.api.tokenuse import TokenUses
    from reconciler.listing import Entry
    from reconciler.retention import Decision
    from reconciler.state.runs import RunRecord
    from reconciler.upstream import Upstream
    from reconciler.verify import Verification

# The HTTP API (FastAPI, uvicorn), the ref watch and restoring are imported where they are
# used: a one-off command (`reconciler run`) needs none of them, and importing FastAPI and the
# API's schemas alone took about half a second of its start.

log = logging.getLogger("reconciler.daemon")

# How long a stopping daemon lets running backups finish (`reconciler serve --shutdown-grace`).
SHUTDOWN_GRACE_SECONDS = 600.0
# How long the HTTP server waits for open requests once the daemon has stopped its runs.
HTTP_SHUTDOWN_SECONDS = 5

# How often a serving daemon records that it is still up (catch-up at the next start treats a
# slot within this long of a crash as one the daemon was up for only if it fired it).
HEARTBEAT_SECONDS = 30.0


class SystemClock:
    """The only place the daemon reads the wall clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)


@dataclass(frozen=True)
class Settings:
    repo: Path
    state: StateLocation = field(repr=False)  # a PostgreSQL URL may carry a password
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
    keep_runs: int = DEFAULT_KEEP_RUNS
    keep_run_age: timedelta | None = DEFAULT_KEEP_RUN_AGE
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    token_use_interval: float = TOKEN_USE_FLUSH_SECONDS
    # The age identity file that decrypts `{age: ...}` secret references; None: they fail.
    age_identity: Path | None = None
    allowed_signers: Path | None = None
    signing_key: Path | None = None
    # Following a remote: `repo` is the daemon's own clone of `remote` (cloned when missing).
    remote: str | None = field(default=None, repr=False)  # may carry credentials
    branch: str = "main"
    fetch_interval: float = 60.0
    webhook_secret: str | None = field(default=None, repr=False)
    shutdown_grace: float = SHUTDOWN_GRACE_SECONDS
    # Several daemons on one store: this one's name (None: the host name when the store is
    # PostgreSQL, else no cluster) and how long its claims last without a renewal.
    node_id: str | None = None
    lease: timedelta = DEFAULT_LEASE


def cluster_node_id(settings: Settings) -> str | None:
    """This daemon's name in a cluster, or None when it runs alone: `--node-id`, else the host
    name when the state store is PostgreSQL (which is there to be shared)."""
    if settings.node_id is not None:
        return settings.node_id
    return socket.gethostname() if is_postgres_url(settings.state) else None


def secrets_path(state: Path) -> Path:
    """The API's secrets live beside the state database, never in git."""
    return state.with_name(state.name + ".secrets.json")


@dataclass
class Core:
    """The parts a one-off command needs: every part of the daemon but its HTTP API."""

    settings: Settings
    clock: Clock
    state: StateStore
    secrets: Secrets
    store: GitStore
    runner: Runner
    scheduler: Scheduler
    engine: Engine
    fire: Fire
    fires: ThreadPoolExecutor
    tally: RunTally
    drills: Scheduler  # restore drills (`verify.schedule`), beside the backups' scheduler
    fire_drill: Fire
    prunes: ResticPrunes  # each restic repository's `prune.schedule`


@dataclass
class Daemon(Core):
    """The core and its HTTP API."""

    app: FastAPI
    token_uses: TokenUses
    reader: StateReader
    history: TaskHistory
    upstream: Upstream | None = None


def build(
    settings: Settings, *, clock: Clock | None = None, environ: Mapping[str, str] | None = None
) -> Daemon:
    """Every part, wired; nothing started and the engine not synced yet.

    `clock` (default: the system's) and `environ` (where `{env: NAME}` secrets are read,
    default: the process's) are parameters so that tests can pass in their own.
    """
    from reconciler.api import create_app
    from reconciler.api.reader import StateReader
    from reconciler.api.tokenuse import TokenUses
    from reconciler.metrics import install_operational_routes
    from reconciler.upstream import Upstream

    core = build_core(settings, clock=clock, environ=environ)
    token_uses = TokenUses(core.state.tokens)
    reader = StateReader()
    history = TaskHistory(core.store)
    upstream = None
    if settings.remote is not None:
        upstream = Upstream(
            engine=core.engine,
            clock=core.clock,
            url=settings.remote,
            branch=settings.branch,
            interval=settings.fetch_interval,
        )
    app = create_app(
        engine=core.engine,
        state=core.state,
        secrets=core.secrets,
        runner=core.runner,
        clock=core.clock,
        token_uses=token_uses,
        reader=reader,
        push=settings.push,
        max_body_bytes=settings.max_body_bytes,
        history=history,
        upstream=upstream,
        webhook_secret=settings.webhook_secret,
    )
    install_operational_routes(
        app,
        engine=core.engine,
        runner=core.runner,
        runs=core.state.runs,
        tally=core.tally,
        upstream=upstream,
        prunes=core.prunes,
    )
    parts = {part.name: getattr(core, part.name) for part in fields(Core)}
    return Daemon(
        **parts,
        app=app,
        token_uses=token_uses,
        reader=reader,
        history=history,
        upstream=upstream,
    )


def build_core(
    settings: Settings, *, clock: Clock | None = None, environ: Mapping[str, str] | None = None
) -> Core:
    """`build` without the HTTP API."""
    clock = SystemClock() if clock is None else clock
    identities = None if settings.age_identity is None else load_identities(settings.age_identity)
    state = open_state(settings.state)
    vault = state.api_secrets
    secrets = Secrets(
        secrets_path(Path(settings.state)) if vault is None else vault,
        os.environ if environ is None else environ,
        identities,
    )
    signing_key = None if settings.signing_key is None else SigningKey(settings.signing_key)
    store = GitStore(settings.repo, sign=None if signing_key is None else signing_key.sign)
    trust = (
        None
        if settings.allowed_signers is None
        else open_trust(store.root, settings.allowed_signers, signing_key)
    )
    tally = RunTally()
    repository_locks = RepositoryLocks()
    pipeline = BackupPipeline(
        runs=state.runs,
        secrets=secrets,
        clock=clock,
        default_timeout=settings.run_timeout,
        known_hosts=settings.known_hosts,
        keep_runs=settings.keep_runs,
        keep_run_age=settings.keep_run_age,
        connect_timeout=settings.connect_timeout,
        stall_timeout=settings.stall_timeout,
        tally=tally,
        repository_locks=repository_locks,
    )

    def in_force(task_id: int) -> ResolvedTask | None:
        return engine.desired.tasks.get(task_id)

    def applied() -> tuple[str | None, datetime | None]:
        revision = engine.revision
        return revision, None if revision is None else store.commit_time(revision)

    drill_pipeline = DrillPipeline(
        runs=state.runs,
        secrets=secrets,
        clock=clock,
        known_hosts=settings.known_hosts,
        repository_locks=repository_locks,
    )
    node_id = cluster_node_id(settings)
    slots = (
        None
        if node_id is None
        else SlotClaims(
            state.claims,
            state.nodes,
            node_id=node_id,
            clock=clock,
            applied=applied,
            lease=settings.lease,
        )
    )
    runner = Runner(
        pipeline,
        runs=state.runs,
        clock=clock,
        max_workers=settings.max_workers,
        in_force=in_force,
        drills=drill_pipeline,
        slots=slots,
        catch_up_deadline=settings.catch_up_deadline,
    )
    fires = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fire")
    fire = record_then_queue(state.schedule.record_fires, runner.queue_scheduled, fires)
    # In a cluster, each node claims slots due at once starting at its own share of them.
    order = None if slots is None else slots.claim_order
    scheduler = Scheduler(clock, fire, fire_order=order)
    fire_drill = queue_drill(runner, fires)
    drills = Scheduler(clock, fire_drill, schedule_of=drill_schedule, fire_order=order)
    engine = Engine(
        store=store,
        scheduler=scheduler,
        state=state,
        clock=clock,
        vet=secrets.vet,
        trust=trust,
        drills=drills,
    )

    def prune(destination: ResticDestination, cancel: threading.Event) -> tuple[PruneResult, str]:
        return prune_repository(destination, secrets.resolve, repository_locks, cancel)

    prunes = ResticPrunes(clock=clock, tasks=lambda: engine.desired.tasks.values(), prune=prune)
    return Core(
        settings,
        clock,
        state,
        secrets,
        store,
        runner,
        scheduler,
        engine,
        fire,
        fires,
        tally,
        drills,
        fire_drill,
        prunes,
    )


def record_then_queue(
    record: Callable[[Sequence[tuple[int, datetime]]], None],
    queue: Callable[[ResolvedTask, datetime], object],
    fires: Executor,
) -> Fire:
    """The scheduler's `Fire`: remember the slot, so a restart never fires it again, then hand
    its run to admission: `record` is the state store's `schedule.record_fires`, `queue`
    `Runner.queue_scheduled`.

    Both write to the state store, which can wait for SQLite's lock, so they run on `fires` (one
    thread: in firing order) and the scheduler's loop, on the event loop, never waits for them.
    The slots waiting when the thread gets to them (a busy minute's) are remembered in one write:
    a write per slot held up the runs of the last ones.
    """
    waiting: list[tuple[ResolvedTask, datetime]] = []
    waiting_lock = threading.Lock()

    def record_and_queue() -> None:
        with waiting_lock:
            batch = waiting.copy()
            waiting.clear()
        if not batch:
            return  # an earlier call took them
        try:
            record([(task.id, slot) for task, slot in batch])
        except Exception:
            for task, slot in batch:
                log.exception("task %d: firing its %s slot failed", task.id, slot)
            return
        for task, slot in batch:
            try:
                queue(task, slot)
            except Exception:
                log.exception("task %d: firing its %s slot failed", task.id, slot)

    def fire(task: ResolvedTask, slot: datetime) -> None:
        with waiting_lock:
            waiting.append((task, slot))
        fires.submit(record_and_queue)

    return fire


def queue_drill(runner: Runner, fires: Executor) -> Fire:
    """The drill scheduler's `Fire`: hand the drill to admission on `fires` (admission records
    the run, which can wait for SQLite's lock). A drill's own bookkeeping is its `verify` run in
    the history, so it never takes a backup's slot."""

    def fire(task: ResolvedTask, slot: datetime) -> None:
        def log_failure(done: Future[Admission]) -> None:
            if (error := done.exception()) is not None:
                log.error("task %d: firing its %s drill failed", task.id, slot, exc_info=error)

        fires.submit(runner.queue_drill, task, slot).add_done_callback(log_failure)

    return fire


@asynccontextmanager
async def running(
    settings: Settings, *, clock: Clock | None = None, environ: Mapping[str, str] | None = None
) -> AsyncIterator[Daemon]:
    """The daemon built (see `build`) and started, in this order: clone the remote when
    following one and `repo` is missing or empty, repair an interrupted commit, first reconcile,
    freeze the GC, recover interrupted runs, sweep unreferenced secrets, catch up missed slots,
    record the up-interval, start the workers (heartbeat, scheduler, ref watch, periodic
    resync, token-use writes, restic prunes, and the fetch loop when following a remote).
    Yields it running; on exit stops the workers and closes every part."""
    from reconciler.api.secretkeys import forget_unreferenced
    from reconciler.gitremote import ensure_clone, redact

    remote = settings.remote
    if remote is not None and await asyncio.to_thread(
        ensure_clone, settings.repo, remote, settings.branch
    ):
        log.info("cloned %s into %s", redact(remote), settings.repo)
    daemon = build(settings, clock=clock, environ=environ)
    stop = asyncio.Event()
    workers: list[asyncio.Task[None]] = []
    alive: int | None = None
    if daemon.state.created:
        log.warning(
            "the state store %s was created new: no run history, no API tokens (create one with"
            " `reconciler token create`), and no missed runs to catch up from before now",
            describe_location(settings.state),
        )
    try:
        repaired = await asyncio.to_thread(daemon.store.repair_interrupted_commit)
        if repaired:
            log.warning("repaired a commit interrupted by a crash: %s", ", ".join(repaired))
        await daemon.engine.sync()
        daemon.history.warm(daemon.engine.revision)
        # The config set's objects live as long as the daemon: keep the cyclic GC from scanning
        # them again on every collection (it made 10,000-task reconciles several times slower).
        gc.freeze()
        # Before anything can start a run: runs a crash left behind end failed, partials removed.
        recovered = await asyncio.to_thread(daemon.runner.recover)
        if recovered:
            log.warning("marked %d interrupted run(s) as failed", len(recovered))
        daemon.runner.start_keeping_claims()
        _warn_of_node_local_destinations(daemon)
        await asyncio.to_thread(_check_restic, daemon)
        # Before the API can write: a crash between storing a secret and committing its
        # reference leaves it in the store for no task.
        swept = await asyncio.to_thread(
            forget_unreferenced, daemon.store, daemon.secrets, daemon.engine.revision
        )
        if swept:
            log.warning("deleted %d secret(s) that no committed file refers to", len(swept))
        for task, slot in daemon.engine.catch_up(settings.catch_up_deadline):
            log.info(
                "task %d missed its %s run while the daemon was down: running it now", task.id, slot
            )
            daemon.fire(task, slot)
        # On the loop's thread, as the backups' catch-up: it moves the drill scheduler.
        for task, slot in daemon.engine.catch_up_drills(settings.catch_up_deadline):
            log.info("task %d missed its %s restore drill: running it now", task.id, slot)
            daemon.fire_drill(task, slot)
        # From here on the scheduler fires every slot, so from here on we were up for it.
        alive = await asyncio.to_thread(
            daemon.state.schedule.begin_alive,
            daemon.clock.now(),
            daemon.clock.now() - settings.catch_up_deadline,
        )
        workers = [
            asyncio.create_task(_heartbeat(daemon, alive), name="heartbeat"),
            asyncio.create_task(daemon.scheduler.run(), name="scheduler"),
            asyncio.create_task(daemon.drills.run(), name="drills"),
            asyncio.create_task(daemon.prunes.run(), name="restic-prunes"),
            asyncio.create_task(_on_commits(daemon, stop), name="watch"),
            asyncio.create_task(
                _resync_every(settings.resync_interval, daemon.engine), name="resync"
            ),
            asyncio.create_task(
                _write_token_uses(settings.token_use_interval, daemon.token_uses),
                name="token-uses",
            ),
        ]
        if daemon.upstream is not None:
            workers.append(asyncio.create_task(daemon.upstream.run(), name="fetch"))
        yield daemon
    finally:
        stop.set()
        daemon.prunes.stop()
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        await close(daemon, alive)
        # What was frozen lived as long as this daemon: the GC may collect it again.
        gc.unfreeze()


async def serve(settings: Settings) -> None:
    """Serve until SIGTERM or SIGINT, then stop in order (see `reconciler.stopping`): runs
    finish or are interrupted while the API still answers (503 to run requests), then the HTTP
    server stops, then `running` closes every part. A signal during start-up stops the daemon
    as soon as it has started."""
    import uvicorn

    from reconciler.stopping import StopSignals, stop_gracefully

    class Server(uvicorn.Server):
        @contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield  # the daemon's StopSignals handle them: uvicorn would stop serving at once

    async def stop_when_asked(daemon: Daemon, server: Server) -> None:
        await signals.requested.wait()
        daemon.drills.stop(daemon.clock.now())
        daemon.prunes.stop()
        try:
            await stop_gracefully(
                daemon.scheduler, daemon.runner, daemon.clock, settings.shutdown_grace, signals
            )
        finally:
            log.info("stopping: closing the HTTP server, then the state store")
            server.should_exit = True

    signals = StopSignals()
    with signals.installed():
        async with running(settings) as daemon:
            server = Server(
                uvicorn.Config(
                    daemon.app,
                    host=settings.host,
                    port=settings.port,
                    log_config=None,
                    access_log=False,
                    # Start-up and shut-down are `running`'s, so a failed start-up ends in its
                    # error.
                    lifespan="off",
                    timeout_graceful_shutdown=HTTP_SHUTDOWN_SECONDS,
                )
            )
            log.info(
                "serving %s (%d tasks) on http://%s:%d",
                settings.repo,
                len(daemon.engine.desired.tasks),
                settings.host,
                settings.port,
            )
            stopper = asyncio.create_task(stop_when_asked(daemon, server), name="stop")
            try:
                await server.serve()
            finally:
                stopper.cancel()
                await asyncio.gather(stopper, return_exceptions=True)
    log.info("stopped")


def _warn_of_node_local_destinations(daemon: Core) -> None:
    """In a cluster a local destination is one node's directory: the others cannot read it."""
    if cluster_node_id(daemon.settings) is None:
        return
    for warning in node_local_destinations(daemon.engine.desired):
        log.warning("%s", warning)


def _check_restic(daemon: Core) -> None:
    """Said once at start-up, not at the first run hours later: the tasks on restic destinations
    need a restic this daemon can run (each run says it again when it fails for it)."""
    destinations = restic_destinations(daemon.engine.desired.tasks.values())
    if not destinations:
        return
    try:
        log.info("restic destinations use %s", check_restic_version())
    except DestinationError as exc:
        labels = ", ".join(f"{d.id} ({d.label})" for _, d in sorted(destinations.items()))
        log.error("%s; the tasks on restic destinations %s will fail until it is", exc, labels)


async def close(daemon: Core, alive: int | None = None) -> None:
    """Stop the parts that run on their own (fires, then runs, then the API's reader), write
    the token uses noted since the last write (a daemon with its API), then close the state
    store; `alive`: this daemon's up-interval, to record it as lasting until now."""
    await asyncio.to_thread(daemon.fires.shutdown, wait=True)
    await daemon.runner.close()
    if alive is not None:
        await asyncio.to_thread(daemon.state.schedule.still_alive, alive, _up_until(daemon))
    if isinstance(daemon, Daemon):
        await asyncio.to_thread(daemon.reader.close)
        await asyncio.to_thread(daemon.history.close)
        try:
            await asyncio.to_thread(daemon.token_uses.flush)
        except Exception:
            log.exception("cannot record the API tokens' last uses")
    await asyncio.to_thread(daemon.engine.close)
    daemon.state.close()


async def _heartbeat(daemon: Daemon, alive: int) -> None:
    """Record every HEARTBEAT_SECONDS that this daemon is still up (see `Engine.catch_up`)."""
    while True:
        await asyncio.sleep(HEARTBEAT_SECONDS)
        try:
            await asyncio.to_thread(daemon.state.schedule.still_alive, alive, _up_until(daemon))
        except Exception:
            log.exception("cannot record that the daemon is up; catch-up may run a slot twice")


def _up_until(daemon: Core) -> datetime:
    """Where this daemon's up-interval ends: now, or when its scheduler stopped firing (a slot
    due while it stopped was not fired, so the next start catches it up)."""
    return daemon.scheduler.stopped_at or daemon.clock.now()


async def _write_token_uses(seconds: float, uses: TokenUses) -> None:
    """Write the API tokens' uses every `seconds` (see `TokenUses`)."""
    while True:
        await asyncio.sleep(seconds)
        try:
            await asyncio.to_thread(uses.flush)
        except Exception:
            log.exception("cannot record the API tokens' last uses; trying again later")


@asynccontextmanager
async def synced(settings: Settings) -> AsyncIterator[Core]:
    """For a one-off command: the daemon's core built and reconciled to the branch head, nothing
    started; closed on exit."""
    daemon = build_core(settings)
    try:
        await daemon.engine.sync()
        yield daemon
    finally:
        await close(daemon)


def start_run(daemon: Core, task_id: int, trigger: str) -> None:
    """Start one run of the task now, or say why it cannot start."""
    daemon.runner.start_keeping_claims()
    admission = daemon.runner.request_run(_task(daemon, task_id), trigger=trigger)
    if admission is not Admission.ACCEPTED:
        raise DaemonError(f"task {task_id}: {admission.message}")


async def restore_backup(
    settings: Settings, task_id: int, run_id: int | None, to: Path, paths: Sequence[str] = ()
) -> Path:
    """`reconciler restore`: the given run's backup (default: the newest) into `to`, only `paths`
    of it when given."""
    from reconciler.restore import restore

    async with synced(settings) as daemon:
        task = _task(daemon, task_id)
        run = await _chosen_run(daemon, task_id, run_id)
        return await asyncio.to_thread(
            partial(
                restore,
                task,
                run=run,
                to=to,
                secrets=daemon.secrets,
                known_hosts=settings.known_hosts,
                paths=paths,
            )
        )


async def list_files(
    settings: Settings, task_id: int, run_id: int | None, emit: Callable[[Entry], None]
) -> str:
    """`reconciler ls`: every entry of the given run's files backup (default: the newest, as
    restore chooses) handed to `emit` as it is read; returns the backup's name."""
    from reconciler.listing import list_backup

    async with synced(settings) as daemon:
        task = _task(daemon, task_id)
        run = await _chosen_run(daemon, task_id, run_id)
        return await asyncio.to_thread(
            partial(
                list_backup,
                task,
                run,
                emit=emit,
                secrets=daemon.secrets,
                known_hosts=settings.known_hosts,
            )
        )


async def _chosen_run(daemon: Core, task_id: int, run_id: int | None) -> RunRecord | None:
    if run_id is None:
        return None
    run = await asyncio.to_thread(daemon.state.runs.run, run_id)
    if run is None or run.task_id != task_id:
        raise DaemonError(f"task {task_id} has no run {run_id}")
    return run


def migrate_state_store(source: Path, target: str, age_identity: Path | None, now: datetime) -> str:
    """`reconciler state migrate`: the SQLite store at `source`, and the API secrets beside it
    (encrypted to `age_identity`, needed when there are any), into the empty PostgreSQL store
    at `target`; the summary of what moved."""
    from reconciler.agecrypt import encrypt_to_identities
    from reconciler.models import SecretRef
    from reconciler.state.transfer import migrate_state

    identities = None if age_identity is None else load_identities(age_identity)
    secrets = Secrets(secrets_path(source), {}, identities)
    keys = sorted(secrets.keys())
    if keys and identities is None:
        raise DaemonError(
            f"{secrets_path(source)} holds {len(keys)} API secrets, which PostgreSQL keeps"
            " age-encrypted: give --age-identity (the identity the daemons will use)"
        )
    armors = [
        (key, encrypt_to_identities(secrets.resolve(SecretRef(secret=key)), identities))
        for key in keys
        if identities is not None
    ]
    return migrate_state(source, target, armors, now).summary()


async def verify_backup(settings: Settings, task_id: int, run_id: int | None) -> Verification:
    """`reconciler verify`: read the given run's backup (default: the task's newest successful
    run's) through, as a restore would, writing nothing."""
    from reconciler.verify import newest_verifiable_run, verify

    async with synced(settings) as daemon:
        task = _task(daemon, task_id)
        runs = daemon.state.runs
        if run_id is None:
            run = await asyncio.to_thread(newest_verifiable_run, runs, task_id)
            if run is None:
                raise DaemonError(f"task {task_id} has no successful backup run to verify")
        else:
            run = await asyncio.to_thread(runs.run, run_id)
            if run is None or run.task_id != task_id:
                raise DaemonError(f"task {task_id} has no run {run_id}")
        return await asyncio.to_thread(
            verify, task, run, secrets=daemon.secrets, known_hosts=settings.known_hosts
        )


async def prune_backups(settings: Settings, task_id: int, *, apply: bool) -> list[Decision]:
    """`reconciler prune`: the task's retention decisions over its destination's backups, the
    removed ones deleted when `apply`."""
    from reconciler.prune import prune

    async with synced(settings) as daemon:
        task = _task(daemon, task_id)
        return await asyncio.to_thread(
            prune, task, daemon.secrets, apply=apply, known_hosts=settings.known_hosts
        )


class DaemonError(ReconcilerError):
    """A request the config set or state cannot satisfy; the message says why."""


def _task(daemon: Core, task_id: int) -> ResolvedTask:
    task = daemon.engine.desired.tasks.get(task_id)
    if task is None:
        raise DaemonError(f"task {task_id} is not in the config set at {daemon.settings.repo}")
    return task


async def _on_commits(daemon: Daemon, stop: asyncio.Event) -> None:
    from reconciler.watcher import ref_changes

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
