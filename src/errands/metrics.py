"""Prometheus metrics: ``/metrics`` on the sync service, and on the worker's own port
(``errands worker --metrics-port``).

Each service or worker keeps its own registry (several can live in one process, as in
the tests). Every metric is named ``errands_*``; none carries a user's name or a job's
payload, only routes, kinds, states and counts. The metric names are listed in
``docs/operators.md``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from errands.protocol import MutationResponse

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
            ("shape_queries", "Shape queries run against Postgres."),
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
    """The template of the route that answered (``/v1/shapes/{table}``)."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED


def instrument(app: Any, fanout: Callable[[], Any | None]) -> ServiceMetrics:
    """Give a Starlette or FastAPI app ``/metrics`` and request counts; the metrics are
    kept in ``app.state.metrics``. ``fanout`` returns the hub's counters (None before
    the service starts)."""
    metrics = ServiceMetrics(fanout)
    app.state.metrics = metrics

    async def scrape(_request: Request) -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    app.add_route(METRICS_PATH, scrape, methods=["GET"], include_in_schema=False)
    app.add_middleware(RequestMetrics, metrics=metrics)
    return metrics
