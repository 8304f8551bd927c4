"""Health and Prometheus metrics, read from the parts' own state at scrape time.

A collector that asks the engine and runner when scraped keeps instrumentation out of the logic:
nothing has to remember to bump a counter.
"""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import FastAPI
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from reconciler.engine import Engine
from reconciler.runner import Runner


class _StateCollector(Collector):
    def __init__(self, engine: Engine, runner: Runner) -> None:
        self._engine = engine
        self._runner = runner

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


def install_operational_routes(app: FastAPI, *, engine: Engine, runner: Runner) -> None:
    registry = CollectorRegistry(auto_describe=True)
    registry.register(_StateCollector(engine, runner))

    @app.get("/healthz", operation_id="showHealth", include_in_schema=False)
    def healthz() -> JSONResponse:
        if engine.reconciled_at is None:
            return JSONResponse({"status": "starting"}, status_code=503)
        return JSONResponse({"status": "ok", "revision": engine.revision})

    @app.get("/metrics", operation_id="showMetrics", include_in_schema=False)
    def metrics() -> PlainTextResponse:
        return PlainTextResponse(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
