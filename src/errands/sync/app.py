"""The sync service as an ASGI application: :func:`create_app`.

Routes (all under ``/v1``; the OpenAPI document is at ``/openapi.json``, and there is no
``/docs`` or ``/redoc``: FastAPI's pages would load their scripts from a CDN)::

    GET  /v1/me                      who the token says the caller is
    GET  /v1/shapes/{table}          snapshot pages, changes, or a long poll (live=true)
    GET  /v1/shapes/{table}/stream   the same as server-sent events, continuously
    POST /v1/mutations               a batch of mutations
    GET  /v1/stats                   fan-out counters (operators only)
    /console, /v1/admin/...          the operator's console (errands.sync.console)
    GET  /metrics                    Prometheus metrics (errands.metrics)
    GET  /v1/client/errands.js       the browser client; the page at / (errands.sync.web)

The service keeps no state of its own beyond caches: run as many copies as needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from psycopg import AsyncConnection, IsolationLevel
from pydantic import BaseModel

from errands import __version__
from errands.connector import connector
from errands.exceptions import ConfigurationError
from errands.metrics import instrument
from errands.migrations import pending
from errands.operations import prune_async
from errands.protocol import (
    LIVE_HOLD_SECONDS,
    PREFIX,
    START,
    ErrorResponse,
    MutationBatch,
    MutationResponse,
    ShapeResponse,
    WhoAmI,
)
from errands.queries import query
from errands.sync.auth import Authenticator, Caller
from errands.sync.caching import SEGMENT_HEADER, cache_segment, shape_answer
from errands.sync.console import router as console_router
from errands.sync.console_answers import router as answers_router
from errands.sync.database import DatabasePool
from errands.sync.errors import ERROR_RESPONSES, Forbidden, Unavailable, install_error_handlers
from errands.sync.fanout import FanoutStats, ShapeHub
from errands.sync.filters import parse_filters
from errands.sync.kinds import ClientKinds
from errands.sync.limits import ROUTE_HEADER, FairShare, Limits, route_key
from errands.sync.mutations import Door, apply_batch
from errands.sync.shapes import SYNC_QUERIES, Shape, parse_offset
from errands.sync.web import allow_origins, web_router

log = logging.getLogger("errands.sync")
DEFAULT_MAX_QUEUED = 10_000


@dataclass(frozen=True)
class ServiceSettings:
    """How the service behaves; the defaults suit production, tests shorten them."""

    live_hold: float = LIVE_HOLD_SECONDS
    poll_interval: float = 1.0
    page_size: int = 1000
    retention: float = 7 * 24 * 3600.0
    prune_interval: float = 300.0
    job_retention: float | None = None
    """Seconds finished jobs are kept before the service prunes them (None: forever)."""
    pool_min_size: int = 2
    pool_max_size: int = 10
    limits: Limits = field(default_factory=Limits)
    page_kinds: tuple[tuple[str, Any], ...] = ()
    """(name, example payload) of the kinds the hosted page offers (errands.sync.web)."""
    cors_origins: tuple[str, ...] = ()
    """Origins of web pages allowed to use the service (errands.js on another site)."""
    client_kinds: tuple[str, ...] = ()
    """Kinds clients may submit besides those workers registered with ``clients=True``
    (``*``: every kind, for development); see :mod:`errands.sync.kinds`."""
    max_queued_per_user: int | None = DEFAULT_MAX_QUEUED
    """Queued jobs one user may have; more is refused with 429 (None: no quota)."""


class ServiceStats(BaseModel):
    """Fan-out counters since the service started: change batches (notifications and
    polls), the change-log reads they caused (one per batch, for every shape), per-shape
    SQL reads (snapshot pages, plain reads, fallbacks), live readers waiting now (and
    how many of them are held at the cursor), and row states held in the change log."""

    change_batches: int
    notifications: int
    polls: int
    change_queries: int
    shape_queries: int
    waiting: int
    held: int
    log_changes: int
    listening: bool


@dataclass
class Service:
    """What the routes share: the pool, the fan-out hub, the authenticator, settings."""

    pool: DatabasePool
    hub: ShapeHub
    auth: Authenticator
    settings: ServiceSettings
    door: Door
    generation: str = ""


_ERRORS = ERROR_RESPONSES
_SHAPE_ERRORS: dict[int | str, dict[str, Any]] = _ERRORS | {
    404: {"model": ErrorResponse, "description": "Unknown table"},
    409: {"model": ShapeResponse, "description": "must-refetch: start again from -1"},
    429: {
        "model": ErrorResponse,
        "description": "The caller holds its share of live readers or shapes; see Retry-After",
        "headers": {"Retry-After": {"schema": {"type": "integer"}}},
    },
}
_MUTATION_ERRORS: dict[int | str, dict[str, Any]] = _ERRORS | {
    408: {"model": ErrorResponse, "description": "The body did not arrive in time"},
    409: {"model": ErrorResponse, "description": "A mutation id reused for another change"},
    413: {"model": ErrorResponse, "description": "The body is too large"},
    429: {
        "model": ErrorResponse,
        "description": "quota_exceeded: the caller has its quota of queued jobs; or "
        "too_many_requests: its share of requests in flight. See Retry-After",
        "headers": {"Retry-After": {"schema": {"type": "integer"}}},
    },
}
_bearer = HTTPBearer(auto_error=False, description="errands token (errands token --help)")


def create_app(
    database_url: str,
    *,
    secret: str | None = None,
    insecure: bool = False,
    settings: ServiceSettings | None = None,
) -> FastAPI:
    """The sync service for the database at ``database_url``.

    Tokens are checked with ``secret``; ``insecure=True`` instead treats every request
    as the one user ``local`` (not an operator), for development only.
    """
    if not insecure and not secret:
        raise ConfigurationError("give the service a token secret, or run it insecure")
    settings = settings or ServiceSettings()
    auth = Authenticator(secret, insecure=insecure)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service = await _start(database_url, auth, settings)
        app.state.service = service
        maintenance = asyncio.create_task(_maintain(service))
        try:
            yield
        finally:
            maintenance.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await maintenance
            await service.hub.stop()
            await service.pool.close()

    app = FastAPI(
        title="errands sync service",
        version=__version__,
        summary="Shapes out, mutations in: the sync protocol of errands, version 1.",
        lifespan=lifespan,
        # FastAPI's /docs and /redoc load their scripts from a CDN: off, so that nothing
        # on this origin runs another origin's code. The document is at /openapi.json.
        docs_url=None,
        redoc_url=None,
    )
    install_error_handlers(app)
    app.add_middleware(FairShare, auth=auth, limits=settings.limits)
    instrument(app, lambda: _fanout_stats(app))  # /metrics, and counts of every request
    _routes(app)
    app.include_router(web_router(settings.page_kinds))
    if settings.cors_origins:
        allow_origins(app, settings.cors_origins)
    app.include_router(console_router)  # /console and /v1/admin, for operators
    app.include_router(answers_router)  # /v1/admin/jobs/{id}/answer
    return app


def release_readers(app: FastAPI) -> None:
    """Answer every held live read and end every stream now: call it when the server
    starts to stop, so that waiting clients do not hold up a graceful shutdown."""
    service: Service | None = getattr(app.state, "service", None)
    if service is not None:
        service.hub.release_readers()


def _fanout_stats(app: FastAPI) -> FanoutStats | None:
    service: Service | None = getattr(app.state, "service", None)
    return None if service is None else service.hub.stats


async def _configure(conn: AsyncConnection[Any]) -> None:
    # Timestamps leave as ISO 8601 in UTC whatever the server's TimeZone is.
    await conn.execute(query("use_utc", SYNC_QUERIES))


async def _start(database_url: str, auth: Authenticator, settings: ServiceSettings) -> Service:
    missing = await asyncio.to_thread(pending, database_url)
    if missing:
        names = ", ".join(f"{m.version:04d}_{m.name}" for m in missing)
        raise ConfigurationError(f"the database is not migrated ({names}); run errands migrate")
    pool = connector().pool(
        DatabasePool,
        database_url,
        min_size=settings.pool_min_size,
        max_size=settings.pool_max_size,
        kwargs={"autocommit": True, "prepare_threshold": None},
        configure=_configure,
        open=False,
    )
    await pool.open(wait=True)
    hub = ShapeHub(
        pool,
        database_url,
        page_size=settings.page_size,
        poll_interval=settings.poll_interval,
        on_database_lost=pool.lost,
    )
    door = Door(ClientKinds(settings.client_kinds), settings.max_queued_per_user)
    service = Service(pool, hub, auth, settings, door)
    await _check_generation(service)
    hub.start()
    return service


async def _check_generation(service: Service) -> None:
    async with service.pool.connection() as conn:
        row = await (await conn.execute(query("check_generation", SYNC_QUERIES))).fetchone()
    assert row is not None
    if service.generation and row[0] != service.generation:
        log.warning("the database is a new generation (restored?): clients will refetch")
    service.generation = row[0]


async def _maintain(service: Service) -> None:
    """Prune tombstones past the retention (and finished jobs past theirs, if set),
    and notice a restored database."""
    retention = service.settings.retention
    while True:
        try:
            await _check_generation(service)
            async with service.pool.connection() as conn:
                # A pooled connection may come from a shape read, still read-only.
                await conn.set_isolation_level(IsolationLevel.READ_COMMITTED)
                await conn.set_read_only(False)
                if service.settings.job_retention is not None:
                    jobs = await prune_async(conn, service.settings.job_retention)
                    if jobs:
                        log.info("pruned %d finished jobs", jobs)
                cursor = await conn.execute(query("prune", SYNC_QUERIES), {"retention": retention})
                row = await cursor.fetchone()
            if row and row[0]:
                log.info("pruned %d tombstones older than %.0f s", row[0], retention)
        except Exception:  # the service serves on; maintenance retries later
            log.exception("sync maintenance failed; retrying later")
        await asyncio.sleep(service.settings.prune_interval)


# The dependencies are coroutines: FastAPI would run plain functions in a thread each.
async def _service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


ServiceDep = Annotated[Service, Depends(_service)]


async def _caller(
    service: ServiceDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    return service.auth.caller(credentials.credentials if credentials else None)


CallerDep = Annotated[Caller, Depends(_caller)]
OffsetParam = Annotated[
    str,
    Query(
        max_length=10_000,
        description="-1 for the start, else the offset of the previous answer.",
    ),
]
WhereParam = Annotated[
    str | None,
    Query(
        max_length=100_000,
        description='Filters as a JSON list: [{"column": "state", "op": "eq", '
        '"value": "queued"}]. The caller\'s permission filter is always added.',
    ),
]


def _shape(table: str, where: str | None, caller: Caller) -> Shape:
    return Shape(table, parse_filters(where), caller.owner_filter)


def _routes(app: FastAPI) -> None:
    @app.get(f"{PREFIX}/me", response_model=WhoAmI, responses=_ERRORS)
    async def me(service: ServiceDep, caller: CallerDep, response: Response) -> WhoAmI:
        """Who the service takes the caller to be, and the database's generation. The
        X-Errands-Segment header names the caller's HTTP cache segment, X-Errands-Route
        the key a proxy keeps each user on one process by (docs/deploy.md)."""
        response.headers[SEGMENT_HEADER] = cache_segment(caller)
        response.headers[ROUTE_HEADER] = route_key(caller)
        return WhoAmI(user=caller.user, operator=caller.operator, generation=service.generation)

    @app.get(f"{PREFIX}/shapes/{{table}}", response_model=ShapeResponse, responses=_SHAPE_ERRORS)
    async def shape(
        request: Request,
        service: ServiceDep,
        caller: CallerDep,
        table: str,
        offset: OffsetParam = START,
        where: WhereParam = None,
        live: bool = False,
    ) -> Response:
        """A page of the snapshot (offset -1, then the returned offsets until
        up-to-date), or the changes since an offset. With live=true and nothing new,
        the answer waits for a change (at most the service's hold, ~20 s)."""
        parsed = parse_offset(offset)
        wanted = _shape(table, where, caller)
        if live:
            answer = await service.hub.live(wanted, parsed, offset, service.settings.live_hold)
        else:
            answer = await service.hub.read_now(wanted, parsed)
        # Cacheable by nginx or a CDN when it moves the reader on (errands.sync.caching).
        return shape_answer(request, answer.body, offset, answer.response.offset)

    @app.get(
        f"{PREFIX}/shapes/{{table}}/stream",
        response_class=StreamingResponse,
        responses=_SHAPE_ERRORS
        | {200: {"content": {"text/event-stream": {}}, "description": "ShapeResponse events"}},
    )
    async def stream(
        service: ServiceDep,
        caller: CallerDep,
        table: str,
        offset: OffsetParam = START,
        where: WhereParam = None,
    ) -> StreamingResponse:
        """Server-sent events: one ShapeResponse (JSON) per event, for as long as the
        client listens. A stale offset is refused (409) before the stream starts."""
        parsed = parse_offset(offset)
        wanted = _shape(table, where, caller)
        answers = service.hub.stream(wanted, parsed, offset, service.settings.live_hold)
        first = await anext(answers)  # errors become a status, not a broken stream

        async def events() -> AsyncIterator[bytes]:
            yield b"data: " + first.body + b"\n\n"
            # The database went away: end the stream cleanly; the client's reconnection
            # then gets the 503 and its Retry-After.
            with contextlib.suppress(Unavailable):
                async for answer in answers:
                    yield b"data: " + answer.body + b"\n\n"

        headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        return StreamingResponse(events(), media_type="text/event-stream", headers=headers)

    @app.post(f"{PREFIX}/mutations", response_model=MutationResponse, responses=_MUTATION_ERRORS)
    async def mutations(
        service: ServiceDep, caller: CallerDep, batch: MutationBatch, request: Request
    ) -> MutationResponse:
        """Apply a batch of mutations in one transaction, each at most once per id."""
        response = await apply_batch(service.pool, caller, batch, service.door)
        request.app.state.metrics.count_mutations(response)
        return response

    @app.get(f"{PREFIX}/stats", response_model=ServiceStats, responses=_ERRORS)
    async def stats(service: ServiceDep, caller: CallerDep) -> ServiceStats:
        """Fan-out counters, for operators: shape queries per change batch should not
        grow with the number of clients."""
        if not caller.operator:
            raise Forbidden("only operators may read the service's counters")
        counters: FanoutStats = service.hub.stats
        return ServiceStats(**vars(counters))
