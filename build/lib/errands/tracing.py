"""One trace for a job's whole life, with OpenTelemetry (``pip install errands[otel]``).

``Client.submit`` starts a span and stores its context in the row (the ``traceparent``
column, W3C Trace Context); the sync service's mutation, the worker's claim and the
handler's run, and the result's arrival at the client each add a span to that trace.
Without the ``opentelemetry-api`` package, or with no tracer provider configured, every
function here does nothing. errands only creates spans: exporting them is the
application's choice (its ``TracerProvider``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

try:
    from opentelemetry import trace
    from opentelemetry.trace import SpanKind, Status, StatusCode
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError:  # the optional extra is not installed
    trace = None  # type: ignore[assignment]

TRACER = "errands"
TRACEPARENT = re.compile(r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")
"""A W3C traceparent header, as the ``traceparent`` column takes it."""
_KINDS = ("internal", "producer", "consumer", "server", "client")


class SpanHandle:
    """What a ``with`` block gets: a way to add attributes to its span (or nothing)."""

    def __init__(self, span: Any = None) -> None:
        self._span = span

    def set(self, key: str, value: str | float | bool) -> None:
        """Set an attribute on the span."""
        if self._span is not None:
            self._span.set_attribute(key, value)

    def failed(self, message: str) -> None:
        """Mark the span as an error."""
        if self._span is not None:
            self._span.set_status(Status(StatusCode.ERROR, message))

    @property
    def traceparent(self) -> str | None:
        """The span's context as a traceparent (None without a span)."""
        if self._span is None:
            return None
        carrier: dict[str, str] = {}
        context = trace.set_span_in_context(self._span)
        TraceContextTextMapPropagator().inject(carrier, context=context)
        return carrier.get("traceparent")


def valid_traceparent(value: Any) -> bool:
    """Whether ``value`` is a traceparent the ``traceparent`` column takes."""
    return isinstance(value, str) and TRACEPARENT.match(value) is not None


@contextmanager
def start_span(name: str, kind: str = "internal", **attributes: Any) -> Iterator[SpanHandle]:
    """A span in the current trace (a new trace if none is current)."""
    if trace is None:
        yield SpanHandle()
        return
    with trace.get_tracer(TRACER).start_as_current_span(
        name, kind=_kind(kind), attributes=attributes
    ) as span:
        yield SpanHandle(span)


@contextmanager
def job_span(
    name: str, traceparent: str | None, kind: str = "internal", **attributes: Any
) -> Iterator[SpanHandle]:
    """A span in the trace of the job whose row carries ``traceparent``, as a child of
    the span that wrote it; nothing for a job without one (not submitted in a trace)."""
    if trace is None or not valid_traceparent(traceparent):
        yield SpanHandle()
        return
    parent = TraceContextTextMapPropagator().extract({"traceparent": str(traceparent)})
    with trace.get_tracer(TRACER).start_as_current_span(
        name, context=parent, kind=_kind(kind), attributes=attributes
    ) as span:
        yield SpanHandle(span)


def _kind(name: str) -> Any:
    assert name in _KINDS, name
    return getattr(SpanKind, name.upper())
