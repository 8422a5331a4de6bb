"""The operator's console: the page at ``/console`` and its API under ``/v1/admin``.

Routes (every ``/v1/admin`` route needs an operator's token: 403 ``operator_required``
for anyone else)::

    GET  /console                    the page (static files from errands/console/static)
    GET  /console/{file}             its scripts and style sheet
    GET  /v1/admin/me                who the token is, and whether it is read-only
    GET  /v1/admin/jobs              one page of jobs (keyset cursor), filtered, searched
    GET  /v1/admin/counts            jobs per state under the same filter (exact, or
                                     marked estimates past a threshold)
    GET  /v1/admin/jobs/{id}         a job's row, its events and its attempts
    POST /v1/admin/jobs/{action}     retry, cancel, delete or reschedule jobs by id and/or
                                     filter (a read-only operator: 403)
    GET  /v1/admin/workers           every registered worker and the jobs it runs now
    GET  /v1/admin/charts            job_events over the last hour, day or week, split
                                     by kind or queue (errands.charts' rollups)
    GET  /v1/admin/queues, POST /v1/admin/queues/{name}/{pause|resume}
                                     (errands.sync.console_queues)

The page reads one page of jobs from here, and follows the jobs on it live through the
operator's shapes (``/v1/shapes/background_jobs/stream``), like any client. The actions
and reads are :mod:`errands.operations`, :mod:`errands.listing` and :mod:`errands.charts`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import Annotated, Any, Literal, LiteralString
from urllib.parse import urlsplit, urlunsplit

import psycopg
from fastapi import APIRouter, Query
from fastapi.responses import Response
from psycopg.rows import class_row
from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field

from errands import charts as charts_
from errands import listing, operations, workflows
from errands.jobs import STATES
from errands.protocol import MAX_KIND_LENGTH, ErrorResponse
from errands.queries import query
from errands.sync.console_queues import router as queues_router
from errands.sync.errors import BadRequest, NotFound, SearchTooBroad
from errands.sync.operators import ADMIN, ERRORS, Acting, OperatorPool, Reader

log = logging.getLogger("errands.console")
CHART_MINUTES = 60
MAX_CHART_MINUTES = 7 * 24 * 60
MAX_CHART_BUCKETS = 24 * 60
MAX_SELECTED = 10_000
"""Most job ids one action request may name (a filter selects any number)."""

_STATIC = resources.files("errands").joinpath("console", "static")
_MEDIA_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}
# The page loads nothing from elsewhere and runs no inline script; no other site may
# frame it, and it sends no Referer (a sign-in link's fragment is never sent anyway).
_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}
_ERRORS = ERRORS
_JOB_ERRORS: dict[int | str, dict[str, Any]] = _ERRORS | {
    404: {"model": ErrorResponse, "description": "not_found: no job has this id"},
}

router = APIRouter()
router.include_router(queues_router)


def _query(name: str) -> LiteralString:
    return query(name, "console.sql")


# -- the page ---------------------------------------------------------------------------


def sign_in_link(service_url: str, token: str) -> str:
    """The console's address at ``service_url`` with ``token`` in its fragment
    (``#token=``), which browsers keep to themselves: the page reads it, stores it for
    the tab and takes it out of the address bar. ``service_url`` may already end in
    ``/console``; ValueError if it is not an http(s) URL."""
    parts = urlsplit(service_url.strip())
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise ValueError(f"{service_url!r} is not an http(s) URL such as http://127.0.0.1:8000")
    path = parts.path.rstrip("/")
    if not path.endswith("/console"):
        path += "/console"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, f"token={token}"))


def _static(name: str) -> Response:
    path = _STATIC.joinpath(name)
    suffix = name[name.rfind(".") :]
    if "/" in name or suffix not in _MEDIA_TYPES or not path.is_file():
        raise NotFound(f"the console has no file {name[:80]!r}")
    return Response(path.read_bytes(), media_type=_MEDIA_TYPES[suffix], headers=_PAGE_HEADERS)


@router.get("/console", include_in_schema=False)
async def console_page() -> Response:
    """The console; it asks for an operator's token itself."""
    return _static("console.html")


@router.get("/console/{name}", include_in_schema=False)
async def console_file(name: str) -> Response:
    """A script or style sheet of the console."""
    return _static(name)


# -- a job ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Attempt:
    """One run of a job: from its ``started`` event to the event that ended it.
    ``outcome`` is that event's type (``retried``: it failed, or its worker died, and
    the job went back to the queue), or ``running`` while it runs."""

    attempt: int
    worker: str | None
    started_at: datetime
    ended_at: datetime | None
    seconds: float | None
    outcome: str
    error: Any


def attempts_of(events: Sequence[operations.JobEvent]) -> list[Attempt]:
    """Each attempt in a job's timeline (events oldest first), oldest first, as
    :func:`errands.operations.attempts` reads them."""
    return [
        Attempt(
            attempt=run.number,
            worker=run.worker,
            started_at=run.started_at,
            ended_at=run.ended_at,
            seconds=None if run.duration is None else run.duration.total_seconds(),
            outcome=run.outcome or "running",
            error=run.error,
        )
        for run in operations.attempts(events)
    ]


class DependencyView(BaseModel):
    """A job this one runs after (``after``), as it is now."""

    id: uuid.UUID
    kind: str
    state: str


class StepView(BaseModel):
    """A durable step the job stored (``ctx.step``, ``ctx.sleep``): its name, the
    attempt that stored it and when; its result stays in ``job_steps``."""

    name: str
    attempt: int
    at: datetime


class JobDetail(BaseModel):
    """A job's row, every transition it went through, its attempts, the jobs it runs
    after (in the order named) and its stored steps (oldest first)."""

    job: operations.JobRecord
    events: list[operations.JobEvent]
    attempts: list[Attempt]
    dependencies: list[DependencyView] = []
    steps: list[StepView] = []


@router.get(f"{ADMIN}/jobs/{{job_id}}", response_model=JobDetail, responses=_JOB_ERRORS)
async def job_detail(pool: OperatorPool, job_id: uuid.UUID) -> JobDetail:
    """One job with its timeline from ``job_events``; 404 if there is no such job."""
    async with pool.connection() as conn:
        job = await operations.get_async(conn, job_id)
        events = await operations.timeline_async(conn, job_id)
        after = await workflows.dependencies_async(conn, job_id)
        steps = await workflows.steps_async(conn, job_id)
    if job is None:
        raise NotFound(f"no job has the id {job_id}")
    return JobDetail(
        job=job,
        events=events,
        attempts=attempts_of(events),
        dependencies=[DependencyView(id=d.id, kind=d.kind, state=d.state) for d in after],
        steps=[StepView(name=s.name, attempt=s.attempt, at=s.at) for s in steps],
    )


# -- actions ----------------------------------------------------------------------------

State = Literal["queued", "running", "completed", "failed", "cancelled"]


def _storable(text: str) -> str:
    # Postgres text cannot hold NUL (pydantic already refuses lone surrogates).
    if "\x00" in text:
        raise ValueError("must not contain a NUL character")
    return text


Name = Annotated[str, Field(min_length=1, max_length=MAX_KIND_LENGTH), AfterValidator(_storable)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


MAX_SEARCH = 200


class Selection(_Model):
    """Jobs matching every criterion given (an empty list: any), as the console's
    filters select them: received by the server ``since <= received_at < until`` (a
    client's own ``timestamp`` never moves a job in or out of a window), and holding
    ``search`` in their payload, result or error (any case)."""

    states: list[State] = Field(default_factory=list, max_length=len(STATES))
    kinds: list[Name] = Field(default_factory=list, max_length=100)
    queues: list[Name] = Field(default_factory=list, max_length=100)
    owners: list[Name] = Field(default_factory=list, max_length=100)
    since: AwareDatetime | None = None
    until: AwareDatetime | None = None
    search: Annotated[str, Field(max_length=MAX_SEARCH), AfterValidator(_storable)] | None = None

    def job_filter(self) -> operations.JobFilter:
        """The same selection for :mod:`errands.operations`."""
        return operations.JobFilter(
            states=self.states,
            kinds=self.kinds,
            queues=self.queues,
            owners=self.owners,
            received_since=self.since,
            received_until=self.until,
            search=self.search or None,
        )


class ActionRequest(_Model):
    """The jobs to act on: ``ids``, a filter (``where``), or both (jobs matching both).
    A filter that selects every job (``{}``) needs ``"all": true`` as well, so that a
    forgotten criterion never acts on every job. ``run_at`` is a reschedule's new run
    time (absent: now)."""

    ids: list[uuid.UUID] = Field(default_factory=list, max_length=MAX_SELECTED)
    where: Selection | None = None
    all: bool = False
    run_at: AwareDatetime | None = None


class ActionResult(BaseModel):
    """What an action did: the jobs it changed (``ids``), and those it held back with
    why (``held``: for a retry, the unique key an unfinished job of the same owner
    holds). Selected jobs in a state the action does not apply to (retrying a running
    job) are in neither."""

    action: str
    ids: list[uuid.UUID]
    held: dict[uuid.UUID, str] = Field(default_factory=dict)


Action = Literal["retry", "cancel", "delete", "reschedule"]


def _action_filter(request: ActionRequest) -> operations.JobFilter | None:
    """The request's filter; 400 if it names no job, or selects every job without
    ``"all": true``."""
    if not request.ids and request.where is None:
        raise BadRequest("say which jobs: ids, where (a filter), or both")
    where = request.where.job_filter() if request.where is not None else None
    if not request.ids and where is not None and where.empty and not request.all:
        raise BadRequest(
            'this filter selects every job; narrow it, or send "all": true to act on all'
        )
    return where


@router.post(f"{ADMIN}/jobs/{{action}}", response_model=ActionResult, responses=_ERRORS)
async def act(operator: Acting, action: Action, request: ActionRequest) -> ActionResult:
    """Retry failed and cancelled jobs, cancel queued and running ones, delete jobs, or
    reschedule queued ones (``run_at``, or now). Changes go through the same triggers as
    every other writer: ``job_events`` records them under the operator's name and
    replicas receive them through their shapes. A read-only operator gets 403."""
    where = _action_filter(request)
    async with operator.writing() as conn:
        outcome = await operations.act_async(
            conn,
            action,
            *request.ids,
            where=where,
            operator=operator.name,
            run_at=request.run_at,
        )
    if action == "delete" and outcome.changed:
        # The deleted jobs' events go with them: the log keeps who deleted what.
        log.info(
            "operator %s deleted %d jobs",
            operator.name,
            len(outcome.changed),
            extra={"operator": operator.name, "jobs": [str(i) for i in outcome.changed]},
        )
    return ActionResult(action=action, ids=outcome.changed, held=outcome.held)


# -- the list ---------------------------------------------------------------------------


class Me(BaseModel):
    """Who the operator's token names, and whether it may act."""

    user: str
    read_only: bool


@router.get(f"{ADMIN}/me", response_model=Me, responses=_ERRORS)
async def me(operator: Reader) -> Me:
    """The operator the token names (the console hides actions from a read-only one)."""
    return Me(user=operator.name, read_only=operator.caller.read_only)


SortName = Literal[
    "-received",
    "received",
    "state",
    "-state",
    "kind",
    "-kind",
    "queue",
    "-queue",
    "run_time",
    "-run_time",
]


class ListQuery(Selection):
    """A page of the list: the filter, the order (``sort``: a key, ``-`` first for
    descending; newest first by default), and a cursor from an earlier page's ``older``
    (``after``) or ``newer`` (``before``) in the same order."""

    sort: SortName = "-received"
    after: Annotated[str, Field(max_length=200)] | None = None
    before: Annotated[str, Field(max_length=200)] | None = None
    limit: Annotated[int, Field(ge=1, le=listing.MAX_PAGE_SIZE)] = listing.PAGE_SIZE


class JobPage(BaseModel):
    """Jobs in the order asked for (newest first by default, by when the server received
    them), and the cursors of the pages beside this one (null: none): ``older`` the next
    page along the order, ``newer`` the one before."""

    jobs: list[operations.JobRecord]
    older: str | None
    newer: str | None


class Counts(BaseModel):
    """Jobs per state under the filter (its states aside), and their total. States in
    ``estimated`` have more than ``exact_up_to`` jobs: their count is the planner's
    estimate, not an exact one."""

    counts: dict[str, int]
    total: int
    estimated: list[str]
    exact_up_to: int


SEARCH_SECONDS = 5.0
"""How long a search in payloads, results and errors may read (``ERRANDS_SEARCH_SECONDS``
overrides it): it reads every job of the selection that does not match, so over a
million jobs and "any time" it is bounded rather than left to hold a connection."""


@contextlib.asynccontextmanager
async def _bounded(conn: psycopg.AsyncConnection[Any], search: str | None) -> AsyncIterator[None]:
    """Run the body under the search's time limit when there is a search: a 422
    ``search_too_broad`` saying what to do once it is reached."""
    if not search:
        yield
        return
    seconds = float(os.environ.get("ERRANDS_SEARCH_SECONDS", SEARCH_SECONDS))
    try:
        async with conn.transaction():
            limit = f"{max(1, int(seconds * 1000))}ms"
            await conn.execute("SELECT set_config('statement_timeout', %s, true)", (limit,))
            yield
    except psycopg.errors.QueryCanceled:
        raise SearchTooBroad(
            f"the search read jobs for {seconds:g} s without finishing: narrow the time "
            "window, or add a state, kind, queue or owner"
        ) from None


@router.get(f"{ADMIN}/jobs", response_model=JobPage, responses=_ERRORS)
async def jobs(pool: OperatorPool, params: Annotated[ListQuery, Query()]) -> JobPage:
    """One page of jobs matching the filter, newest first or in the order ``sort``
    names (state, kind, queue or run time; run time lists the jobs that ran to an end),
    from a keyset cursor: a page never skips or repeats a job however the table
    changes, and one costs the same at any depth (docs/operators.md has the figures)."""
    try:
        async with pool.connection() as conn, _bounded(conn, params.search):
            found = await listing.page_async(
                conn,
                params.job_filter(),
                sort=listing.Sort.parse(params.sort),
                after=params.after,
                before=params.before,
                limit=params.limit,
            )
    except listing.BadCursor as exc:
        raise BadRequest(str(exc)) from None
    return JobPage(jobs=found.jobs, older=found.older, newer=found.newer)


@router.get(f"{ADMIN}/counts", response_model=Counts, responses=_ERRORS)
async def counts(pool: OperatorPool, params: Annotated[Selection, Query()]) -> Counts:
    """Jobs per state matching the filter, in SQL: exact up to a threshold per state,
    the planner's estimate (listed in ``estimated``) past it."""
    async with pool.connection() as conn, _bounded(conn, params.search):
        found = await listing.count_states_async(conn, params.job_filter())
    return Counts(
        counts=found.counts,
        total=found.total,
        estimated=found.estimated,
        exact_up_to=listing.COUNT_EXACT_UP_TO,
    )


# -- workers ----------------------------------------------------------------------------


class RunningJob(BaseModel):
    """A job a worker runs now."""

    id: uuid.UUID
    kind: str
    started_at: datetime | None
    progress: float


class Workers(BaseModel):
    """Every worker the database knows of, live ones first, and the jobs they run (each
    worker's ``running`` names them by id)."""

    workers: list[operations.WorkerInfo]
    jobs: list[RunningJob]


@router.get(f"{ADMIN}/workers", response_model=Workers, responses=_ERRORS)
async def workers(pool: OperatorPool) -> Workers:
    """Each worker with host, pid, kinds, queues, lease expiry and its running jobs."""
    async with pool.connection() as conn:
        known = await operations.workers_async(conn)
        async with conn.cursor(row_factory=class_row(RunningJob)) as cursor:
            await cursor.execute(_query("running_jobs"))
            running = await cursor.fetchall()
    return Workers(workers=sorted(known, key=lambda worker: not worker.alive), jobs=running)


# -- charts -----------------------------------------------------------------------------


class ChartMinute(BaseModel):
    """One bucket (a minute unless asked otherwise): jobs that ended (by how;
    ``retried`` attempts went back to the queue), jobs queued at its end, and the
    p50/p95/p99 pickup latency and run time in seconds of the attempts that started /
    ended in it (null: none did), read from log-scale histograms (within 19%)."""

    minute: datetime
    completed: int
    failed: int
    cancelled: int
    retried: int
    queued: int
    pickups: int
    pickup_seconds: list[float] | None
    runs: int
    run_seconds: list[float] | None


class GroupMinute(BaseModel):
    """One kind's or queue's share of a bucket."""

    completed: int
    failed: int
    cancelled: int
    retried: int
    queued: int


class ChartTotals(BaseModel):
    """The pickup latency and run time percentiles (p50, p95, p99) over the window."""

    pickups: int
    pickup_seconds: list[float] | None
    runs: int
    run_seconds: list[float] | None


class Charts(BaseModel):
    """The window's buckets, oldest first, totals over all of them, and with ``split``
    each kind's or queue's share of every bucket (``groups``, by name)."""

    minutes: list[ChartMinute]
    totals: ChartTotals
    split: Literal["kind", "queue"] | None = None
    groups: dict[str, list[GroupMinute]] = Field(default_factory=dict)


def _chart_minute(bucket: charts_.Bucket) -> ChartMinute:
    return ChartMinute(
        minute=bucket.minute,
        completed=bucket.completed,
        failed=bucket.failed,
        cancelled=bucket.cancelled,
        retried=bucket.retried,
        queued=bucket.queued,
        pickups=sum(bucket.pickups),
        pickup_seconds=charts_.histogram_percentiles(bucket.pickups),
        runs=sum(bucket.runs),
        run_seconds=charts_.histogram_percentiles(bucket.runs),
    )


@router.get(f"{ADMIN}/charts", response_model=Charts, responses=_ERRORS)
async def charts(
    operator: Reader,
    minutes: Annotated[int, Query(ge=1, le=MAX_CHART_MINUTES)] = CHART_MINUTES,
    bucket: Annotated[int, Query(ge=60, le=24 * 3600, description="seconds a bar covers")] = 60,
    split: Annotated[
        Literal["kind", "queue"] | None, Query(description="each kind's or queue's share")
    ] = None,
    kind: Annotated[Name | None, Query(description="only this kind's jobs")] = None,
    queue: Annotated[Name | None, Query(description="only this queue's jobs")] = None,
) -> Charts:
    """Jobs finished per bucket (a minute unless ``bucket`` says otherwise) by state,
    queue depth, pickup latency and run time percentiles, from per-minute rollups of
    ``job_events`` (errands.charts): the last hour per minute, a day per 15 minutes, a
    week per hour, in tens of milliseconds at any table size."""
    if bucket % 60 or minutes * 60 % bucket or minutes * 60 // bucket > MAX_CHART_BUCKETS:
        raise BadRequest(
            f"bucket must be whole minutes, and minutes * 60 a multiple of it, into at most "
            f"{MAX_CHART_BUCKETS} buckets (e.g. minutes=10080&bucket=3600 for a week per hour)"
        )
    async with operator.writing() as conn:
        # The rollups are the service's bookkeeping, not a change of any job: a
        # read-only operator's chart brings them up to date too.
        await charts_.roll_up_async(conn)
        chart = await charts_.read_async(conn, minutes, bucket, split=split, kind=kind, queue=queue)
    every = chart.buckets
    pickups = [sum(n) for n in zip(*(b.pickups for b in every), strict=True)]
    runs = [sum(n) for n in zip(*(b.runs for b in every), strict=True)]
    return Charts(
        minutes=[_chart_minute(b) for b in every],
        totals=ChartTotals(
            pickups=sum(pickups),
            pickup_seconds=charts_.histogram_percentiles(pickups),
            runs=sum(runs),
            run_seconds=charts_.histogram_percentiles(runs),
        ),
        split=split,
        groups={
            name: [
                GroupMinute(
                    completed=b.completed,
                    failed=b.failed,
                    cancelled=b.cancelled,
                    retried=b.retried,
                    queued=b.queued,
                )
                for b in buckets
            ]
            for name, buckets in sorted(chart.groups.items())
        },
    )
