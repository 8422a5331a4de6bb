"""One trace for a job's whole life: the client's submit, the service's mutation, the
worker's claim and run, and the result's arrival at the client, checked with the
OpenTelemetry SDK's in-memory exporter. Service, worker and client run in this process
(real HTTP, real Postgres) so that one exporter sees every span."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import uvicorn
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import errands
from errands.sync import ServiceSettings, create_app, make_token
from tests.client.processes import free_port
from tests.helpers import wait_for
from tests.sync.api import mutation, post
from tests.worker.handlers import registry

SECRET = "tracing-tests-secret-0123456789abcdef"


@pytest.fixture(scope="module")
def exporter() -> InMemorySpanExporter:
    """Every span this process ends, kept in memory (the provider is set once per
    process: OpenTelemetry allows no more)."""
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    trace.set_tracer_provider(provider)
    return memory


@pytest.fixture
def service_url(database_url: str) -> Iterator[str]:
    """The sync service, in a thread of this process."""
    port = free_port()
    app = create_app(
        database_url,
        secret=SECRET,
        settings=ServiceSettings(poll_interval=0.2, client_kinds=("*",)),
    )
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, what="the service to start")
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(30)


@pytest.fixture
def worker(database_url: str) -> Iterator[None]:
    """A worker, on an event loop in a thread of this process."""
    running = errands.Worker(
        registry,
        database_url,
        errands.WorkerSettings(poll_interval=0.1, lease=2, heartbeat_interval=0.3),
    )
    loops: list[asyncio.AbstractEventLoop] = []

    async def main() -> None:
        loops.append(asyncio.get_running_loop())
        await running.run()

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    wait_for(lambda: loops, what="the worker to start")
    yield
    loops[0].call_soon_threadsafe(running.stop)
    thread.join(30)


def named(spans: tuple[ReadableSpan, ...], name: str) -> ReadableSpan:
    [span] = [s for s in spans if s.name == name]
    return span


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent else None


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.span_id


def test_a_job_is_one_trace_from_submit_to_result(
    exporter: InMemorySpanExporter,
    service_url: str,
    worker: None,
    database_url: str,
    tmp_path: Path,
) -> None:
    exporter.clear()
    user = make_token(SECRET, "alice")
    with errands.Client(replica=tmp_path / "r.db", server=service_url, token=user) as client:
        client.connect()
        job = client.submit("add", {"a": 1, "b": 2})
        done = client.wait(job.id, timeout=60)
    assert (done.state, done.result) == ("completed", 3)

    spans = tuple(s for s in exporter.get_finished_spans() if s.name.startswith("errands."))
    submit = named(spans, "errands.submit")
    insert = named(spans, "errands.insert")
    claim = named(spans, "errands.claim")
    run = named(spans, "errands.run add")
    result = named(spans, "errands.result")
    assert submit.context is not None
    assert {s.context.trace_id for s in spans if s.context} == {submit.context.trace_id}
    assert submit.parent is None
    assert parent_of(insert) == span_id(submit)
    assert parent_of(claim) == span_id(submit)
    assert parent_of(run) == span_id(claim)
    assert parent_of(result) == span_id(submit)
    assert submit.kind == trace.SpanKind.PRODUCER
    assert insert.kind == trace.SpanKind.SERVER
    assert run.attributes is not None
    assert run.attributes["errands.job.state"] == "completed"
    assert result.attributes is not None
    assert result.attributes["errands.job.id"] == job.id

    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT traceparent FROM background_jobs").fetchone()
    assert row is not None
    assert row[0].startswith(f"00-{submit.context.trace_id:032x}-{span_id(submit):016x}-")


def test_the_service_refuses_a_malformed_traceparent(
    exporter: InMemorySpanExporter, service_url: str, database_url: str
) -> None:
    headers = {"Authorization": f"Bearer {make_token(SECRET, 'alice')}"}
    key = str(uuid.uuid4())
    with httpx.Client(base_url=service_url, headers=headers, timeout=30) as http:
        values: dict[str, Any] = {"kind": "add", "traceparent": "00-not-a-trace-01"}
        [result] = post(http, mutation("insert", key, values)).results
    assert (result.status, result.code) == ("rejected", "validation_error")
    assert "traceparent" in (result.message or "")
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM background_jobs").fetchone() == (0,)
