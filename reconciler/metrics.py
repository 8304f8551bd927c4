"""Health and Prometheus metrics, read from the parts' own state at scrape time.

A collector that asks the engine and runner when scraped keeps instrumentation out of the logic:
nothing has to remember to bump a counter. Runs are counted in two ways (README, "Monitors and
metrics"): the counters and the duration histogram come from the runs this process carried out
(`RunTally`: the pruned history could only make a counter go down), the last success's time and
size from the state store, so they are right at once after a restart. Every per-task series is
labelled by task id alone, and only tasks of the applied revision are shown.
"""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import FastAPI
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from reconciler.engine import Engine
from reconciler.resticprune import ResticPrunes, restic_destinations
from reconciler.runner import Runner
from reconciler.runtally import DURATION_BUCKETS, RunTally, TaskTally
from reconciler.state.runs import Runs
from reconciler.types import RunKind, RunStatus
from reconciler.upstream import Upstream

_RESULTS = (RunStatus.SUCCESSFUL, RunStatus.FAILED)
_NOTHING_YET = TaskTally()


class _StateCollector(Collector):
    def __init__(self, engine: Engine, runner: Runner, upstream: Upstream | None) -> None:
        self._engine = engine
        self._runner = runner
        self._upstream = upstream

    def collect(self) -> Iterator[Metric]:
        tasks = self._engine.desired.tasks
        paused = sum(1 for task in tasks.values() if task.task.paused)
        scheduled = GaugeMetricFamily(
            "reconciler_tasks", "Tasks in the running schedule.", labels=["state"]
        )
        scheduled.add_metric(["active"], len(tasks) - paused)
        scheduled.add_metric(["paused"], paused)
        yield scheduled
        yield GaugeMetricFamily(
            "reconciler_config_errors",
            "Problems in the config set (the last good versions keep running).",
            value=len(self._engine.errors),
        )
        yield CounterMetricFamily(
            "reconciler_reconciles", "Reconciles completed.", value=self._engine.reconciles
        )
        if self._engine.revision is not None:
            yield InfoMetricFamily(
                "reconciler_applied_revision",
                "The commit of the config set in force.",
                value={"revision": self._engine.revision},
            )
        if self._engine.reconciled_at is not None:
            yield GaugeMetricFamily(
                "reconciler_last_reconcile_timestamp_seconds",
                "When the last reconcile finished (unix time).",
                value=self._engine.reconciled_at.timestamp(),
            )
        if self._engine.last_duration is not None:
            yield GaugeMetricFamily(
                "reconciler_last_reconcile_duration_seconds",
                "How long the last reconcile took.",
                value=self._engine.last_duration,
            )
        if (trust := self._engine.trust) is not None:
            state = trust.state
            yield CounterMetricFamily(
                "reconciler_signature_refusals",
                "Branch heads not applied because no allowed key signed them.",
                value=state.refusals,
            )
            yield GaugeMetricFamily(
                "reconciler_head_refused",
                "1 while the branch head is refused and the last verified revision runs.",
                value=int(state.refused_revision is not None),
            )
        running, queued = self._runner.counts()
        yield GaugeMetricFamily(
            "reconciler_runs_in_progress", "Backup runs executing now.", value=running
        )
        yield GaugeMetricFamily(
            "reconciler_runs_queued",
            "Backup runs admitted and waiting for a worker or for a slot of their server.",
            value=queued,
        )
        if (node := self._runner.cluster_node()) is not None:
            yield InfoMetricFamily(
                "reconciler_node",
                "This daemon's node in a cluster sharing one state store.",
                value={"node_id": node.node_id},
            )
            yield GaugeMetricFamily(
                "reconciler_node_claims_held",
                "Runs this node holds claims for (running or waiting for a worker).",
                value=node.held(),
            )
            yield GaugeMetricFamily(
                "reconciler_node_waiting_for_server",
                "Scheduled slots this node waits to claim: no worker of its own is free, or their"
                " server has no room in the cluster.",
                value=self._runner.unclaimed(),
            )
        if self._upstream is not None:
            yield from _remote_metrics(self._upstream)


def _remote_metrics(upstream: Upstream) -> Iterator[Metric]:
    status = upstream.status
    yield GaugeMetricFamily(
        "reconciler_remote_up",
        "1 if the last fetch from the remote succeeded (0: the last good revision runs on).",
        value=1 if status.fetches and status.last_error is None else 0,
    )
    yield CounterMetricFamily(
        "reconciler_remote_fetches", "Fetches from the remote attempted.", value=status.fetches
    )
    yield CounterMetricFamily(
        "reconciler_remote_fetch_failures",
        "Fetches from the remote that failed.",
        value=status.failures,
    )
    if status.last_success_at is not None:
        yield GaugeMetricFamily(
            "reconciler_remote_last_success_timestamp_seconds",
            "When a fetch from the remote last succeeded (unix time).",
            value=status.last_success_at.timestamp(),
        )
    yield GaugeMetricFamily(
        "reconciler_remote_set_aside_refs",
        "Refs under refs/reconciler/ holding our commits that no longer applied to the remote.",
        value=len(status.set_aside),
    )


class _RunCollector(Collector):
    def __init__(self, engine: Engine, runs: Runs, tally: RunTally) -> None:
        self._engine = engine
        self._runs = runs
        self._tally = tally

    def collect(self) -> Iterator[Metric]:
        task_ids = sorted(self._engine.desired.tasks)
        counted = self._tally.snapshot()
        runs = CounterMetricFamily(
            "reconciler_runs",
            "Backup runs this daemon carried out since it started, by task and result.",
            labels=["task_id", "result"],
        )
        durations = HistogramMetricFamily(
            "reconciler_run_duration_seconds",
            "How long the runs this daemon carried out took, by task.",
            labels=["task_id"],
        )
        stored = CounterMetricFamily(
            "reconciler_stored_bytes",
            "Bytes the successful runs this daemon carried out stored, by task.",
            labels=["task_id"],
        )
        for task_id in task_ids:
            label = str(task_id)
            # Every task of the schedule has its series from the start, at zero, so that the
            # first failure is an increase PromQL sees.
            tally = counted.get(task_id, _NOTHING_YET)
            for result in _RESULTS:
                runs.add_metric([label, result.value], tally.runs.get(result, 0))
            cumulative, buckets = 0, []
            for bound, count in zip(
                (*DURATION_BUCKETS, float("inf")), tally.durations, strict=True
            ):
                cumulative += count
                buckets.append((_bound(bound), cumulative))
            durations.add_metric([label], buckets, tally.duration_sum)
            stored.add_metric([label], tally.stored_bytes)
        yield runs
        yield durations
        yield stored
        last = self._runs.last_successes(task_ids)
        when = GaugeMetricFamily(
            "reconciler_last_success_timestamp_seconds",
            "When each task's newest successful run finished (unix time), from the run history.",
            labels=["task_id"],
        )
        size = GaugeMetricFamily(
            "reconciler_last_backup_size_bytes",
            "The size of each task's newest successful backup, from the run history.",
            labels=["task_id"],
        )
        for task_id, success in sorted(last.items()):
            when.add_metric([str(task_id)], success.finished_at.timestamp())
            if success.size is not None:
                size.add_metric([str(task_id)], success.size)
        yield when
        yield size
        verified = GaugeMetricFamily(
            "reconciler_task_last_verified_timestamp_seconds",
            "When each task's newest successful restore drill finished (unix time), from the run"
            " history.",
            labels=["task_id"],
        )
        for task_id, drill in sorted(self._runs.last_successes(task_ids, RunKind.VERIFY).items()):
            verified.add_metric([str(task_id)], drill.finished_at.timestamp())
        yield verified


class _PruneCollector(Collector):
    def __init__(self, engine: Engine, prunes: ResticPrunes) -> None:
        self._engine = engine
        self._prunes = prunes

    def collect(self) -> Iterator[Metric]:
        records = self._prunes.records
        last = GaugeMetricFamily(
            "reconciler_restic_prune_last_timestamp_seconds",
            "When the daemon's last restic prune of each restic destination ended (unix time),"
            " by its result (done, skipped, failed), since the daemon started.",
            labels=["destination_id", "result"],
        )
        upcoming = GaugeMetricFamily(
            "reconciler_restic_prune_next_timestamp_seconds",
            "When each restic destination's next prune is due (unix time).",
            labels=["destination_id"],
        )
        for destination_id in sorted(restic_destinations(self._engine.desired.tasks.values())):
            label = str(destination_id)
            record = records.get(destination_id)
            if record is not None:
                last.add_metric([label, record.result.value], record.finished_at.timestamp())
            at = self._prunes.next_at(destination_id)
            if at is not None:
                upcoming.add_metric([label], at.timestamp())
        yield last
        yield upcoming


def _bound(seconds: float) -> str:
    return "+Inf" if seconds == float("inf") else repr(seconds)


def install_operational_routes(
    app: FastAPI,
    *,
    engine: Engine,
    runner: Runner,
    runs: Runs,
    tally: RunTally,
    upstream: Upstream | None = None,
    prunes: ResticPrunes | None = None,
) -> None:
    registry = CollectorRegistry(auto_describe=True)
    registry.register(_StateCollector(engine, runner, upstream))
    registry.register(_RunCollector(engine, runs, tally))
    if prunes is not None:
        registry.register(_PruneCollector(engine, prunes))

    @app.get("/healthz", operation_id="showHealth", include_in_schema=False)
    def healthz() -> JSONResponse:
        if engine.reconciled_at is None:
            return JSONResponse({"status": "starting"}, status_code=503)
        return JSONResponse({"status": "ok", "revision": engine.revision})

    @app.get("/metrics", operation_id="showMetrics", include_in_schema=False)
    def metrics() -> PlainTextResponse:
        return PlainTextResponse(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
