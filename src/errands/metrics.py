"""Prometheus metrics: ``/metrics`` on the sync service, and on the worker's own port
(``errands worker --metrics-port``).

Each service or worker keeps its own registry (several can live in one process, as in
the tests). Every metric is named ``errands_*``; none carries a user's name or a job's
payload, only routes, kinds, states and counts. The metric names are listed in
``docs/operators.md``.

``errands worker --processes N`` serves one port for all its worker processes, with
prometheus_client's multiprocess mode: the supervisor gives each child the folder
``PROMETHEUS_MULTIPROC_DIR``, where the child's counters, histograms and gauges live in
files of its own, and serves their sum (:class:`SupervisorMetrics`). Counters of a child
that died stay in the sum, so totals never go backwards; its "running" gauge goes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import psycopg
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from errands.connector import connector
from errands.operations import QueueDepth, queues
from errands.protocol import MutationResponse
from errands.queries import query

if TYPE_CHECKING:  # the service's web stack: only instrument() needs it at run time
    from starlette.requests import Request
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("errands.metrics")

METRICS_PATH = "/metrics"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
"""Seconds. The job buckets (run time, pickup latency) reach further."""
JOB_BUCKETS = (*LATENCY_BUCKETS, 60, 300, 900, 3600)
UNMATCHED = "unmatched"
"""The route label of requests no route answers (a label per raw path would let any
caller grow the metrics without bound)."""


class ServiceMetrics:
    """The sync service's metrics: requests by route and status with their latency
    (to the first byte: a stream's length is the client's choice), mutations by
    outcome, and the fan-out's counters (change batches, notifications, polls, shape
    queries, live readers), read from the hub when scraped."""

    def __init__(self, fanout: Callable[[], Any | None]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "errands_http_requests",
            "HTTP requests answered, by route, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "errands_http_request_duration_seconds",
            "Time from a request to the start of its answer, by route.",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.mutations = Counter(
            "errands_sync_mutations",
            "Mutations by outcome: applied, replayed (a retry of an applied one), or the "
            "rejection's code.",
            ["outcome"],
            registry=self.registry,
        )
        self.registry.register(_FanoutCollector(fanout))

    def count_mutations(self, response: MutationResponse) -> None:
        """Count a batch's mutations by outcome."""
        for result in response.results:
            if result.status == "applied":
                outcome = "replayed" if result.replayed else "applied"
            else:
                outcome = str(result.code.value if result.code else "rejected")
            self.mutations.labels(outcome).inc()

    def exposition(self) -> bytes:
        """The metrics in Prometheus' text format."""
        return generate_latest(self.registry)


class _FanoutCollector(Collector):
    """The fan-out hub's counters, read when scraped (the hub keeps them anyway)."""

    def __init__(self, fanout: Callable[[], Any | None]) -> None:
        self._fanout = fanout

    def collect(self) -> Iterable[Metric]:
        stats = self._fanout()
        if stats is None:  # not started yet
            return
        for name, help_text in (
            ("change_batches", "Change batches read (one read per batch for every shape)."),
            ("notifications", "Change notifications received from Postgres."),
            ("polls", "Polls for changes when no notification came."),
            ("change_queries", "Change-log reads (one per change batch, for every shape)."),
            ("shape_queries", "Per-shape queries: snapshot pages, plain reads, fallbacks."),
        ):
            yield CounterMetricFamily(f"errands_sync_{name}", help_text, value=getattr(stats, name))
        yield GaugeMetricFamily(
            "errands_sync_live_readers",
            "Live reads and streams waiting for changes.",
            stats.waiting,
        )
        yield GaugeMetricFamily(
            "errands_sync_listening", "1 while the service LISTENs for changes.", stats.listening
        )


class RequestMetrics:
    """ASGI middleware counting each HTTP request by route template, method and status."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on; count and time it when its answer starts."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        method = scope["method"]
        answered = False

        def count(status: int) -> None:
            route = _route(scope)
            self.metrics.requests.labels(route, method, str(status)).inc()
            self.metrics.latency.labels(route, method).observe(time.perf_counter() - started)

        async def counting_send(message: Message) -> None:
            nonlocal answered
            if message["type"] == "http.response.start":
                answered = True
                count(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        except Exception:
            if not answered:  # the server answers 500
                count(500)
            raise


def _route(scope: Scope) -> str:
    """The template of the route that answered (``/v1/shapes/{table}``), or for a
    request refused before routing (a bad token, a body too large) the route it was
    for; :data:`UNMATCHED` if no route has its path."""
    route = scope.get("route") or _route_for(scope)
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED


def _route_for(scope: Scope) -> Any:
    """The app's route whose path and method match the request (a route whose path
    matches but not its method, failing that), without running it."""
    router = getattr(scope.get("app"), "router", None)
    full, partial = _match(getattr(router, "routes", ()), scope)
    return full or partial


def _match(routes: Iterable[Any], scope: Scope) -> tuple[Any, Any]:
    # FastAPI wraps an included router (its original_router holds the routes); the
    # service's routers are included without a prefix, so their paths are whole.
    from starlette.routing import Match  # noqa: PLC0415 -- the worker never loads it

    partial = None
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            full, found = _match(inner.routes, scope)
        else:
            match, _ = route.matches(scope)
            full = route if match is Match.FULL else None
            found = route if match is Match.PARTIAL else None
        if full is not None:
            return full, None
        partial = partial or found
    return None, partial


def instrument(app: Any, fanout: Callable[[], Any | None]) -> ServiceMetrics:
    """Give a Starlette or FastAPI app ``/metrics`` and request counts; the metrics are
    kept in ``app.state.metrics``. ``fanout`` returns the hub's counters (None before
    the service starts)."""
    from starlette.responses import Response  # noqa: PLC0415 -- the worker never loads it

    metrics = ServiceMetrics(fanout)
    app.state.metrics = metrics

    async def scrape(_request: Request) -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    app.add_route(METRICS_PATH, scrape, methods=["GET"], include_in_schema=False)
    app.add_middleware(RequestMetrics, metrics=metrics)
    return metrics


class WorkerMetrics:
    """One worker's metrics: attempts claimed and finished by kind (and state), their
    run time and pickup latency, jobs running now, lease renewals; and, read from the
    database when scraped, each queue's depth.

    The worker calls :meth:`claimed` where a job starts, :meth:`ended` where its attempt
    ends, and :meth:`lease_renewed` after each renewal; nothing else.
    """

    def __init__(self, database_url: str) -> None:
        self.registry = CollectorRegistry()
        self.claimed_jobs = Counter(
            "errands_worker_jobs_claimed",
            "Attempts started, by kind.",
            ["kind"],
            registry=self.registry,
        )
        self.finished_jobs = Counter(
            "errands_worker_jobs_finished",
            "Attempts ended, by kind and the state they left the job in (queued: to be retried).",
            ["kind", "state"],
            registry=self.registry,
        )
        self.run_time = Histogram(
            "errands_worker_job_run_seconds",
            "Handler run time per attempt, by kind.",
            ["kind"],
            buckets=JOB_BUCKETS,
            registry=self.registry,
        )
        self.pickup_latency = Histogram(
            "errands_worker_pickup_latency_seconds",
            "From when a job could run (its run_at) to its claim, by kind.",
            ["kind"],
            buckets=JOB_BUCKETS,
            registry=self.registry,
        )
        self.running = Gauge(
            "errands_worker_jobs_running",
            "Jobs this worker runs now.",
            registry=self.registry,
            multiprocess_mode="livesum",  # under a supervisor: the live children's sum
        )
        self.lease_renewals = Counter(
            "errands_worker_lease_renewals",
            "Heartbeats that renewed this worker's lease.",
            registry=self.registry,
        )
        self.registry.register(_QueueCollector(database_url))

    def claimed(self, kind: str, pickup_seconds: float) -> None:
        """A job of ``kind`` was claimed ``pickup_seconds`` after it could run."""
        self.claimed_jobs.labels(kind).inc()
        self.pickup_latency.labels(kind).observe(max(pickup_seconds, 0.0))
        self.running.inc()

    def ended(self, kind: str, state: str | None, run_seconds: float) -> None:
        """An attempt ended, leaving the job in ``state`` (None: abandoned as the worker
        exits, the job left with its lease)."""
        self.running.dec()
        if state is not None:
            self.finished_jobs.labels(kind, state).inc()
            self.run_time.labels(kind).observe(run_seconds)

    def lease_renewed(self) -> None:
        """The lease was renewed (called from the lease's thread)."""
        self.lease_renewals.inc()

    def serve(self, host: str, port: int) -> tuple[str, Callable[[], None]]:
        """Serve ``/metrics`` on ``host:port`` (0: any free port) from a thread; the URL,
        and a function that stops serving."""
        return serve(self.registry, host, port)


class SupervisorMetrics:
    """The metrics of ``errands worker --processes N`` on its one port: every worker
    process's :class:`WorkerMetrics`, summed from the multiprocess folder ``folder``,
    each queue's depth (read once, here, not once per child), and the supervisor's
    restarts of crashed children."""

    def __init__(self, database_url: str, folder: str) -> None:
        self.folder = folder
        self.registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(self.registry, path=folder)  # type: ignore[no-untyped-call]
        self.registry.register(_QueueCollector(database_url))
        self.restarts = Counter(
            "errands_worker_process_restarts",
            "Worker processes the supervisor restarted after they crashed.",
            registry=self.registry,
        )

    def process_exited(self, pid: int) -> None:
        """Forget the live gauges of a worker process that has exited."""
        multiprocess.mark_process_dead(pid, self.folder)  # type: ignore[no-untyped-call]

    def serve(self, host: str, port: int) -> tuple[str, Callable[[], None]]:
        """As :meth:`WorkerMetrics.serve`."""
        return serve(self.registry, host, port)


def serve(registry: CollectorRegistry, host: str, port: int) -> tuple[str, Callable[[], None]]:
    """Serve ``registry`` at ``/metrics`` on ``host:port`` (0: any free port) from a
    thread; the URL, and a function that stops serving."""
    server, thread = start_http_server(port, host, registry)
    url = f"http://{host}:{server.server_port}{METRICS_PATH}"

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(5)

    return url, stop


MAX_QUEUE_LABELS = 50
"""Queues /metrics names one by one; the rest are summed under ``other``."""
OTHER_QUEUE = "other"


class _QueueCollector(Collector):
    """Each served queue's depth, read from the database when scraped (on a connection
    of its own, kept between scrapes; scrapes may come from several threads).

    Clients may name queues, so only the queues workers serve (listed by a running
    worker, or the queue of a registered kind, and ``default``; at most
    ``MAX_QUEUE_LABELS``) get a label each: every other queue is summed under ``other``,
    and a client inventing queue names cannot grow the scrape."""

    def __init__(self, database_url: str) -> None:
        self._url = database_url
        self._conn: psycopg.Connection[Any] | None = None
        self._lock = threading.Lock()

    def collect(self) -> Iterable[Metric]:
        depth = GaugeMetricFamily(
            "errands_queue_depth", "Jobs ready to run now, by queue.", labels=["queue"]
        )
        scheduled = GaugeMetricFamily(
            "errands_queue_scheduled", "Queued jobs due later, by queue.", labels=["queue"]
        )
        oldest = GaugeMetricFamily(
            "errands_queue_oldest_age_seconds",
            "How long the oldest ready job of each queue has waited since the server "
            "received it (or since it came due).",
            labels=["queue"],
        )
        for queue in self._read():
            depth.add_metric([queue.queue], queue.ready)
            scheduled.add_metric([queue.queue], queue.scheduled)
            oldest.add_metric([queue.queue], queue.oldest_age or 0.0)
        return [depth, scheduled, oldest]

    def _read(self) -> list[QueueDepth]:
        with self._lock:
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = connector().connect(self._url, autocommit=True, connect_timeout=5)
                rows = queues(self._conn)
                served = self._conn.execute(query("served_queues"), {"limit": MAX_QUEUE_LABELS})
                names = {name for (name,) in served.fetchall()}
            except psycopg.Error as exc:
                log.warning("reading the queues for /metrics failed: %s", exc)
                if self._conn is not None:
                    self._conn.close()
                self._conn = None
                return []
        return labelled_queues(rows, names)


def labelled_queues(rows: Iterable[QueueDepth], served: set[str]) -> list[QueueDepth]:
    """``rows`` with every queue outside ``served`` summed into one ``other`` row (its
    oldest age the oldest of theirs)."""
    named = [row for row in rows if row.queue in served]
    others = [row for row in rows if row.queue not in served]
    if others:
        ages = [row.oldest_age for row in others if row.oldest_age is not None]
        oldest = [row.oldest for row in others if row.oldest is not None]
        named.append(
            QueueDepth(
                queue=OTHER_QUEUE,
                ready=sum(row.ready for row in others),
                scheduled=sum(row.scheduled for row in others),
                oldest=min(oldest) if oldest else None,
                oldest_age=max(ages) if ages else None,
            )
        )
    return named
