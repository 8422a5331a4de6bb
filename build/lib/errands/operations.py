"""The operator's side, in Python: see, wait for, cancel, retry, delete and prune any
job, straight against the database (no sync service, no permission filter).

Every function takes a psycopg connection and has an ``_async`` twin that takes an
``AsyncConnection``, as :func:`errands.enqueue` does::

    with psycopg.connect(url, autocommit=True) as conn:
        job = errands.get(conn, job_id)
        errands.retry(conn, where=errands.JobFilter(states=["failed"], kinds=["resize"]))
        errands.prune(conn, timedelta(days=30))

Actions (:func:`cancel`, :func:`retry`, :func:`delete`, :func:`reschedule`) take job
ids, a :class:`JobFilter`, or both (the jobs matching both), and return the ids of the
jobs they changed: the rest were not in a state the action applies to (:func:`act`
also says which were held back, such as a retry whose unique key an unfinished job
holds). Every change goes through the same triggers as the worker's and the clients',
so ``job_events`` records it under the operator's name (``operator=``, by default the
local user), workers are woken, and replicas receive it through their shapes (deleted
and pruned jobs leave as deletes).

The queries are in ``sql/operations.sql``.
"""

from __future__ import annotations

import getpass
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from functools import cache
from typing import Any, LiteralString, TypeVar

import psycopg
from psycopg import sql
from psycopg.rows import class_row
from psycopg.types.json import JsonbLoader, JsonLoader

from errands.exceptions import JobNotFound, WaitTimeout
from errands.jobs import FINAL_STATES, STATES
from errands.queries import query

OPERATIONS_QUERIES = "operations.sql"
WAIT_POLL_INTERVAL = 2.0
"""Seconds :func:`wait` waits for a notification before it reads the row anyway
(notifications are hints: one lost while the connection was busy must not stall it)."""
PRUNE_BATCH_SIZE = 1000
ACTION_ATTEMPTS = 3
"""How often an action is tried when a concurrent insert takes a unique key it was
about to give back (the next try sees that job and holds the retry back)."""
OPERATOR_NOTES = frozenset({"cancel_requested", "rescheduled"})
"""Event types an operator's action records without a state change; they are not part
of any attempt."""
ACTIONS = ("retry", "cancel", "delete", "reschedule")

JobId = uuid.UUID | str
"""A job's id, as a UUID or its text."""
AnyConnection = psycopg.Connection[Any]
AnyAsyncConnection = psycopg.AsyncConnection[Any]
C = TypeVar("C", psycopg.Cursor[Any], psycopg.AsyncCursor[Any])


@dataclass(frozen=True)
class JobRecord:
    """A job row as the database holds it (every column but the sync bookkeeping)."""

    id: uuid.UUID
    timestamp: datetime
    kind: str
    payload: Any
    owner: str | None
    state: str
    cancelled: bool
    completed: bool
    progress: float
    progress_message: str | None
    result: Any
    error: Any
    attempts: int
    max_attempts: int
    timeout_seconds: float | None
    run_at: datetime
    priority: int
    queue: str
    lease_owner: str | None
    received_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    traceparent: str | None

    @property
    def done(self) -> bool:
        """Whether the job has ended: completed, failed or cancelled."""
        return self.state in FINAL_STATES


@dataclass(frozen=True)
class JobEvent:
    """One transition of a job, from ``job_events``: ``type`` is queued, started,
    retried, failed, cancelled or completed, or an operator's note (cancel_requested,
    rescheduled); ``error`` is set on retried and failed. ``operator`` names the
    operator whose action it records (then ``worker`` is None)."""

    id: int
    job_id: uuid.UUID
    at: datetime
    type: str
    attempt: int
    worker: str | None
    error: Any
    operator: str | None = None


@dataclass(frozen=True)
class Attempt:
    """One run of a job, read from its timeline: who ran it, when, and how it ended
    (``outcome`` is completed, failed, retried, cancelled, or None while it runs)."""

    number: int
    worker: str | None
    started_at: datetime
    ended_at: datetime | None
    outcome: str | None
    error: Any

    @property
    def duration(self) -> timedelta | None:
        """How long the attempt ran (None while it runs)."""
        return None if self.ended_at is None else self.ended_at - self.started_at


def attempts(events: Iterable[JobEvent]) -> list[Attempt]:
    """The attempts in a job's :func:`timeline`, oldest first."""
    runs: list[Attempt] = []
    for event in events:
        if event.type in OPERATOR_NOTES:
            continue
        if event.type == "started":
            runs.append(Attempt(event.attempt, event.worker, event.at, None, None, None))
        elif runs and runs[-1].outcome is None and event.attempt == runs[-1].number:
            run = runs[-1]
            runs[-1] = Attempt(
                run.number, run.worker, run.started_at, event.at, event.type, event.error
            )
    return runs


@dataclass(frozen=True)
class JobFilter:
    """Which jobs a list, count or bulk action is about. Every field narrows the
    selection; an empty sequence or None means "any". ``since`` and ``until`` bound the
    job's ``timestamp`` (when its client asked for it, by the client's clock):
    ``since <= timestamp < until``; ``received_since`` and ``received_until`` bound
    ``received_at`` (when the server received it), as the console's time windows do.
    ``search`` keeps jobs whose payload, result or error holds the text (any case)."""

    states: Sequence[str] = ()
    kinds: Sequence[str] = ()
    queues: Sequence[str] = ()
    owners: Sequence[str] = ()
    ids: Sequence[JobId] = ()
    since: datetime | None = None
    until: datetime | None = None
    received_since: datetime | None = None
    received_until: datetime | None = None
    search: str | None = None

    def __post_init__(self) -> None:
        unknown = set(self.states) - set(STATES)
        if unknown:
            raise ValueError(f"unknown state {sorted(unknown)[0]!r}; states are {STATES}")

    def params(self) -> dict[str, Any]:
        """The parameters of the ``job_selection`` block."""
        return {
            "ids": [_uuid(i) for i in self.ids] or None,
            "states": list(self.states) or None,
            "kinds": list(self.kinds) or None,
            "queues": list(self.queues) or None,
            "owners": list(self.owners) or None,
            "since": self.since,
            "until": self.until,
            "received_since": self.received_since,
            "received_until": self.received_until,
            "search": self.search.lower() if self.search else None,
        }

    @property
    def empty(self) -> bool:
        """Whether the filter selects every job."""
        return not any(self.params().values())


@dataclass(frozen=True)
class ActionOutcome:
    """What an action did: the jobs it changed, and those it held back with why (for a
    retry: the unique key an unfinished job holds). Selected jobs in a state the action
    does not apply to are in neither."""

    action: str
    changed: list[uuid.UUID]
    held: dict[uuid.UUID, str]


@dataclass(frozen=True)
class QueueDepth:
    """One queue's backlog: jobs ready to run now, jobs scheduled for later, when the
    oldest ready one was received by the server and how many seconds ago."""

    queue: str
    ready: int
    scheduled: int
    oldest: datetime | None
    oldest_age: float | None


@dataclass(frozen=True)
class WorkerInfo:
    """A worker and the jobs it holds now. ``alive`` is false once its lease expired
    (its jobs are re-queued by the next worker that notices); a lease holder that is
    no longer registered shows with only ``id`` and ``running``."""

    id: str
    hostname: str | None
    pid: int | None
    kinds: list[str] | None
    queues: list[str] | None
    started_at: datetime | None
    lease_expires_at: datetime | None
    alive: bool
    running: list[uuid.UUID]


@dataclass(frozen=True)
class Stats:
    """The state of the whole system: jobs per kind and state, each queue's depth,
    and each worker with the jobs it runs."""

    counts: dict[str, dict[str, int]]
    """kind -> state -> number of jobs."""
    queues: list[QueueDepth]
    workers: list[WorkerInfo]

    @property
    def by_state(self) -> dict[str, int]:
        """Number of jobs per state, every state listed."""
        totals = dict.fromkeys(STATES, 0)
        for per_state in self.counts.values():
            for state, count in per_state.items():
                totals[state] += count
        return totals

    @property
    def oldest_queued(self) -> datetime | None:
        """When the oldest job ready to run was received (None: nothing waits)."""
        return min((q.oldest for q in self.queues if q.oldest is not None), default=None)


@dataclass(frozen=True)
class PrunePlan:
    """What :func:`prune` would delete: jobs per state."""

    counts: dict[str, int]

    @property
    def total(self) -> int:
        """How many jobs in all."""
        return sum(self.counts.values())


# --- building the queries -------------------------------------------------------------


def _uuid(value: JobId) -> uuid.UUID:
    try:
        return value if isinstance(value, uuid.UUID) else uuid.UUID(value)
    except ValueError:
        raise JobNotFound(f"{value!r} is not a job id") from None


def _q(name: str) -> LiteralString:
    return query(name, OPERATIONS_QUERIES)


@cache
def job_query(name: str, filename: str = OPERATIONS_QUERIES) -> sql.Composed:
    """The query ``name`` of ``sql/filename``, a template whose ``{selection}`` is the
    :class:`JobFilter` condition on ``background_jobs j`` and ``{columns}`` the columns
    of :class:`JobRecord`."""
    columns = sql.SQL(", ").join(sql.Identifier("j", field.name) for field in fields(JobRecord))
    template = query(name, filename)
    return sql.SQL(template).format(selection=sql.SQL(_q("job_selection")), columns=columns)


def _composed(name: str) -> sql.Composed:
    return job_query(name)


def _selection(job_ids: Iterable[JobId], where: JobFilter | None) -> dict[str, Any]:
    """The parameters for ids and/or a filter; one of them is required, so that a
    forgotten argument never acts on every job."""
    ids = [_uuid(i) for i in job_ids]
    if where is None and not ids:
        raise ValueError("give job ids, a JobFilter, or both")
    params = (where or JobFilter()).params()
    if ids:
        wanted = set(ids) if params["ids"] is None else set(ids) & set(params["ids"])
        params["ids"] = sorted(wanted)
    return params


def _json_as_json(cursor: C) -> C:
    """``cursor``, reading JSON columns as JSON whatever loaders its connection carries
    (Django's connection loads ``jsonb`` as text)."""
    cursor.adapters.register_loader("jsonb", JsonbLoader)
    cursor.adapters.register_loader("json", JsonLoader)
    return cursor


def _seconds(span: timedelta | float) -> float:
    return span.total_seconds() if isinstance(span, timedelta) else float(span)


def _prune_params(
    older_than: timedelta | float, states: Iterable[str], batch_size: int = PRUNE_BATCH_SIZE
) -> dict[str, Any]:
    chosen = list(states)
    not_final = set(chosen) - FINAL_STATES
    if not_final:
        raise ValueError(f"only finished jobs can be pruned, not {sorted(not_final)}")
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    return {"older_than": _seconds(older_than), "states": chosen, "batch_size": batch_size}


def _stats(
    kind_rows: Iterable[tuple[str, str, int]],
    queues: list[QueueDepth],
    workers: list[WorkerInfo],
) -> Stats:
    counts: dict[str, dict[str, int]] = {}
    for kind, state, count in kind_rows:
        counts.setdefault(kind, {})[state] = count
    return Stats(counts, queues, workers)


def _check_autocommit(autocommit: bool) -> None:
    if not autocommit:
        raise ValueError(
            "wait needs an autocommit connection: inside a transaction it would neither "
            "see the job change nor hear the notification"
        )


# --- reading --------------------------------------------------------------------------


def get(conn: AnyConnection, job_id: JobId) -> JobRecord | None:
    """The job with this id, or None."""
    with _json_as_json(conn.cursor(row_factory=class_row(JobRecord))) as cur:
        return cur.execute(_composed("get_job"), {"id": _uuid(job_id)}).fetchone()


async def get_async(conn: AnyAsyncConnection, job_id: JobId) -> JobRecord | None:
    """:func:`get` for an asyncio connection."""
    async with _json_as_json(conn.cursor(row_factory=class_row(JobRecord))) as cur:
        await cur.execute(_composed("get_job"), {"id": _uuid(job_id)})
        return await cur.fetchone()


def find_id(conn: AnyConnection, text: str) -> uuid.UUID:
    """The id of the one job whose id is ``text`` or ends with it (the short ids the
    command line shows). JobNotFound if none or several match."""
    try:
        return uuid.UUID(text)
    except ValueError:
        pass
    return _one_match(text, conn.execute(_q("find_ids"), {"suffix": text.lower()}).fetchall())


async def find_id_async(conn: AnyAsyncConnection, text: str) -> uuid.UUID:
    """:func:`find_id` for an asyncio connection."""
    try:
        return uuid.UUID(text)
    except ValueError:
        pass
    cursor = await conn.execute(_q("find_ids"), {"suffix": text.lower()})
    return _one_match(text, await cursor.fetchall())


def _one_match(text: str, rows: list[tuple[uuid.UUID]]) -> uuid.UUID:
    if not text or len(rows) != 1:
        many = "several jobs" if len(rows) > 1 else "no job"
        raise JobNotFound(f"{many} with an id ending in {text!r}; give more of the id")
    return rows[0][0]


def list_jobs(
    conn: AnyConnection, where: JobFilter | None = None, *, limit: int = 100, offset: int = 0
) -> list[JobRecord]:
    """The jobs matching ``where`` (every job if None), newest first."""
    params = (where or JobFilter()).params() | {"limit": limit, "offset": offset}
    with _json_as_json(conn.cursor(row_factory=class_row(JobRecord))) as cur:
        return cur.execute(_composed("list_jobs"), params).fetchall()


async def list_jobs_async(
    conn: AnyAsyncConnection,
    where: JobFilter | None = None,
    *,
    limit: int = 100,
    offset: int = 0,
) -> list[JobRecord]:
    """:func:`list_jobs` for an asyncio connection."""
    params = (where or JobFilter()).params() | {"limit": limit, "offset": offset}
    async with _json_as_json(conn.cursor(row_factory=class_row(JobRecord))) as cur:
        await cur.execute(_composed("list_jobs"), params)
        return await cur.fetchall()


def count_jobs(conn: AnyConnection, where: JobFilter | None = None) -> dict[str, int]:
    """How many jobs match ``where``, per state (states with none are left out)."""
    params = (where or JobFilter()).params()
    return dict(conn.execute(_composed("count_jobs"), params).fetchall())


async def count_jobs_async(
    conn: AnyAsyncConnection, where: JobFilter | None = None
) -> dict[str, int]:
    """:func:`count_jobs` for an asyncio connection."""
    params = (where or JobFilter()).params()
    return dict(await (await conn.execute(_composed("count_jobs"), params)).fetchall())


def timeline(conn: AnyConnection, job_id: JobId) -> list[JobEvent]:
    """Every transition of the job, oldest first (empty for an unknown id)."""
    with _json_as_json(conn.cursor(row_factory=class_row(JobEvent))) as cur:
        return cur.execute(_q("timeline"), {"id": _uuid(job_id)}).fetchall()


async def timeline_async(conn: AnyAsyncConnection, job_id: JobId) -> list[JobEvent]:
    """:func:`timeline` for an asyncio connection."""
    async with _json_as_json(conn.cursor(row_factory=class_row(JobEvent))) as cur:
        await cur.execute(_q("timeline"), {"id": _uuid(job_id)})
        return await cur.fetchall()


def workers(conn: AnyConnection) -> list[WorkerInfo]:
    """Every registered worker (live or not yet forgotten) and the jobs it runs."""
    with _json_as_json(conn.cursor(row_factory=class_row(WorkerInfo))) as cur:
        return cur.execute(_q("workers")).fetchall()


async def workers_async(conn: AnyAsyncConnection) -> list[WorkerInfo]:
    """:func:`workers` for an asyncio connection."""
    async with _json_as_json(conn.cursor(row_factory=class_row(WorkerInfo))) as cur:
        await cur.execute(_q("workers"))
        return await cur.fetchall()


def queues(conn: AnyConnection) -> list[QueueDepth]:
    """Each queue that has queued jobs, with its depth."""
    with _json_as_json(conn.cursor(row_factory=class_row(QueueDepth))) as cur:
        return cur.execute(_q("queue_depth")).fetchall()


async def queues_async(conn: AnyAsyncConnection) -> list[QueueDepth]:
    """:func:`queues` for an asyncio connection."""
    async with _json_as_json(conn.cursor(row_factory=class_row(QueueDepth))) as cur:
        await cur.execute(_q("queue_depth"))
        return await cur.fetchall()


def stats(conn: AnyConnection) -> Stats:
    """Jobs per kind and state, each queue's depth, each worker's running jobs."""
    kinds = conn.execute(_q("counts_by_kind")).fetchall()
    return _stats(kinds, queues(conn), workers(conn))


async def stats_async(conn: AnyAsyncConnection) -> Stats:
    """:func:`stats` for an asyncio connection."""
    kinds = await (await conn.execute(_q("counts_by_kind"))).fetchall()
    return _stats(kinds, await queues_async(conn), await workers_async(conn))


# --- waiting --------------------------------------------------------------------------


def wait(conn: AnyConnection, job_id: JobId, *, timeout: float | None = None) -> JobRecord:
    """Block until the job has ended (completed, failed or cancelled) and return it.

    Woken by the notification every change to the jobs table sends, and reading the
    row every few seconds anyway. ``conn`` must be in autocommit mode. Raises
    WaitTimeout after ``timeout`` seconds (None: wait forever), JobNotFound if there is
    no such job (or it is deleted while waiting).
    """
    _check_autocommit(conn.autocommit)
    wanted = _uuid(job_id)
    deadline = None if timeout is None else time.monotonic() + timeout
    conn.execute(_q("listen"))
    try:
        while True:
            job = _ended(get(conn, wanted), wanted)
            if job is not None:
                return job
            for _ in conn.notifies(timeout=_next_wait(deadline), stop_after=1):
                pass
    finally:
        conn.execute(_q("unlisten"))


async def wait_async(
    conn: AnyAsyncConnection, job_id: JobId, *, timeout: float | None = None
) -> JobRecord:
    """:func:`wait` for an asyncio connection."""
    _check_autocommit(conn.autocommit)
    wanted = _uuid(job_id)
    deadline = None if timeout is None else time.monotonic() + timeout
    await conn.execute(_q("listen"))
    try:
        while True:
            job = _ended(await get_async(conn, wanted), wanted)
            if job is not None:
                return job
            async for _ in conn.notifies(timeout=_next_wait(deadline), stop_after=1):
                pass
    finally:
        await conn.execute(_q("unlisten"))


def _ended(job: JobRecord | None, job_id: uuid.UUID) -> JobRecord | None:
    """The job if it has ended, None if it runs on; JobNotFound if it is gone."""
    if job is None:
        raise JobNotFound(f"no job {job_id} in the database")
    return job if job.done else None


def _next_wait(deadline: float | None) -> float:
    """How long to wait for the next notification; WaitTimeout past the deadline."""
    if deadline is None:
        return WAIT_POLL_INTERVAL
    left = deadline - time.monotonic()
    if left <= 0:
        raise WaitTimeout()
    return min(left, WAIT_POLL_INTERVAL)


# --- acting ---------------------------------------------------------------------------


def default_operator() -> str:
    """Who an action is recorded under when no operator is named: the local user and
    host (``alice@build-3``)."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no user name in the environment or password database
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _action_query(action: str) -> sql.Composed:
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}; actions are {', '.join(ACTIONS)}")
    return _composed(f"{action}_jobs")


def _outcome(action: str, rows: Sequence[tuple[uuid.UUID, str | None]]) -> ActionOutcome:
    changed = [job_id for job_id, held in rows if held is None]
    return ActionOutcome(action, changed, {job_id: held for job_id, held in rows if held})


def act(
    conn: AnyConnection,
    action: str,
    *job_ids: JobId,
    where: JobFilter | None = None,
    operator: str | None = None,
    run_at: datetime | None = None,
) -> ActionOutcome:
    """Run ``action`` (retry, cancel, delete or reschedule) on the jobs named and/or
    selected, in one transaction, recorded under ``operator``; ``run_at`` is the new run
    time of a reschedule (None: now)."""
    query = _action_query(action)
    params = _selection(job_ids, where) | {"run_at": run_at}
    who = {"operator": operator or default_operator()}
    for attempt in range(ACTION_ATTEMPTS):
        try:
            with conn.transaction():
                conn.execute(_q("set_operator"), who)
                rows = conn.execute(query, params).fetchall()
                conn.execute(_q("set_operator"), {"operator": ""})
            return _outcome(action, rows)
        except psycopg.errors.UniqueViolation:
            if attempt + 1 == ACTION_ATTEMPTS:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


async def act_async(
    conn: AnyAsyncConnection,
    action: str,
    *job_ids: JobId,
    where: JobFilter | None = None,
    operator: str | None = None,
    run_at: datetime | None = None,
) -> ActionOutcome:
    """:func:`act` for an asyncio connection."""
    query = _action_query(action)
    params = _selection(job_ids, where) | {"run_at": run_at}
    who = {"operator": operator or default_operator()}
    for attempt in range(ACTION_ATTEMPTS):
        try:
            async with conn.transaction():
                await conn.execute(_q("set_operator"), who)
                rows = await (await conn.execute(query, params)).fetchall()
                await conn.execute(_q("set_operator"), {"operator": ""})
            return _outcome(action, rows)
        except psycopg.errors.UniqueViolation:
            if attempt + 1 == ACTION_ATTEMPTS:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def cancel(
    conn: AnyConnection,
    *job_ids: JobId,
    where: JobFilter | None = None,
    operator: str | None = None,
) -> list[uuid.UUID]:
    """Request the cancellation of queued and running jobs, as a client does: a queued
    job ends as cancelled at once, a running one when its handler sees the request.
    Returns the ids of the jobs asked to stop (not those that had already ended or had
    already been asked)."""
    return act(conn, "cancel", *job_ids, where=where, operator=operator).changed


async def cancel_async(
    conn: AnyAsyncConnection,
    *job_ids: JobId,
    where: JobFilter | None = None,
    operator: str | None = None,
) -> list[uuid.UUID]:
    """:func:`cancel` for an asyncio connection."""
    return (await act_async(conn, "cancel", *job_ids, where=where, operator=operator)).changed


def retry(
    conn: AnyConnection,
    *job_ids: JobId,
    where: JobFilter | None = None,
    operator: str | None = None,
) -> list[uuid.UUID]:
    """Put failed and cancelled jobs back in the queue for one more attempt (their
    ``max_attempts`` grows if it has to). The earlier attempts stay in ``job_events``;
    the row's result, error and progress are cleared. Returns the ids re-queued; a job
    whose ``unique_key`` an unfinished job holds stays as it is (:func:`act` lists
    those)."""
    return act(conn, "retry", *job_ids, where=where, operator=operator).changed


async def retry_async(
    conn: AnyAsyncConnection,
    *job_ids: JobId,
    where: JobFilter | None = None,
    operator: str | None = None,
) -> list[uuid.UUID]:
    """:func:`retry` for an asyncio connection."""
    return (await act_async(conn, "retry", *job_ids, where=where, operator=operator)).changed


def delete(
    conn: AnyConnection,
    *job_ids: JobId,
    where: JobFilter | None = None,
    operator: str | None = None,
) -> list[uuid.UUID]:
    """Delete jobs, whatever their state, with their events. Replicas drop them (the
    delete reaches them through their shapes); a worker running one finds it gone and
    drops its outcome. Returns the ids deleted."""
    return act(conn, "delete", *job_ids, where=where, operator=operator).changed


async def delete_async(
    conn: AnyAsyncConnection,
    *job_ids: JobId,
    where: JobFilter | None = None,
    operator: str | None = None,
) -> list[uuid.UUID]:
    """:func:`delete` for an asyncio connection."""
    return (await act_async(conn, "delete", *job_ids, where=where, operator=operator)).changed


def reschedule(
    conn: AnyConnection,
    *job_ids: JobId,
    run_at: datetime | None = None,
    where: JobFilter | None = None,
    operator: str | None = None,
) -> list[uuid.UUID]:
    """Move queued jobs (waiting on their ``run_at`` or a retry's backoff) to ``run_at``,
    or make them runnable now (None). Returns the ids moved."""
    outcome = act(conn, "reschedule", *job_ids, where=where, operator=operator, run_at=run_at)
    return outcome.changed


async def reschedule_async(
    conn: AnyAsyncConnection,
    *job_ids: JobId,
    run_at: datetime | None = None,
    where: JobFilter | None = None,
    operator: str | None = None,
) -> list[uuid.UUID]:
    """:func:`reschedule` for an asyncio connection."""
    outcome = await act_async(
        conn, "reschedule", *job_ids, where=where, operator=operator, run_at=run_at
    )
    return outcome.changed


# --- retention ------------------------------------------------------------------------


def prunable(
    conn: AnyConnection, older_than: timedelta | float, states: Iterable[str] = FINAL_STATES
) -> PrunePlan:
    """What :func:`prune` would delete now (a dry run)."""
    params = _prune_params(older_than, states)
    return PrunePlan(dict(conn.execute(_q("prunable"), params).fetchall()))


async def prunable_async(
    conn: AnyAsyncConnection,
    older_than: timedelta | float,
    states: Iterable[str] = FINAL_STATES,
) -> PrunePlan:
    """:func:`prunable` for an asyncio connection."""
    params = _prune_params(older_than, states)
    return PrunePlan(dict(await (await conn.execute(_q("prunable"), params)).fetchall()))


def prune(
    conn: AnyConnection,
    older_than: timedelta | float,
    states: Iterable[str] = FINAL_STATES,
    *,
    batch_size: int = PRUNE_BATCH_SIZE,
    on_batch: Callable[[int], None] | None = None,
) -> int:
    """Delete jobs that finished more than ``older_than`` ago (a timedelta, or
    seconds), with their events, in batches of ``batch_size``, oldest first; return how
    many. Only ``states`` (a subset of completed, failed, cancelled) are pruned: never
    a queued or running job. ``on_batch`` is called with each batch's size.

    On an autocommit connection each batch commits on its own, so a long prune never
    holds many locks and can be interrupted; replicas drop the pruned jobs.
    """
    params = _prune_params(older_than, states, batch_size)
    total = 0
    while True:
        with conn.transaction():
            deleted = len(conn.execute(_q("prune_batch"), params).fetchall())
        total += deleted
        if on_batch is not None and deleted:
            on_batch(deleted)
        if deleted < batch_size:
            return total


async def prune_async(
    conn: AnyAsyncConnection,
    older_than: timedelta | float,
    states: Iterable[str] = FINAL_STATES,
    *,
    batch_size: int = PRUNE_BATCH_SIZE,
    on_batch: Callable[[int], None] | None = None,
) -> int:
    """:func:`prune` for an asyncio connection."""
    params = _prune_params(older_than, states, batch_size)
    total = 0
    while True:
        async with conn.transaction():
            cursor = await conn.execute(_q("prune_batch"), params)
            deleted = len(await cursor.fetchall())
        total += deleted
        if on_batch is not None and deleted:
            on_batch(deleted)
        if deleted < batch_size:
            return total
