"""Server-side enqueue: a job inserted inside the caller's own transaction."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any, Literal, TypedDict, Unpack

import psycopg
from psycopg.pq import TransactionStatus

from errands.exceptions import JobNotFound
from errands.ids import uuid7, uuid7_many
from errands.payloads import dump_json
from errands.protocol import MAX_NAME_LENGTH
from errands.queries import query

STATES = ("queued", "running", "completed", "failed", "cancelled")
FINAL_STATES = frozenset({"completed", "failed", "cancelled"})


class BatchOptions(TypedDict, total=False):
    """How jobs are scheduled and retried. Every option left out takes the default its
    kind's handler registered (``@registry.job(..., max_attempts=...)``), else the
    built-in one: 3 attempts, priority 0, queue ``default``, no timeout, run now."""

    max_attempts: int
    """How many times the job is tried before it fails (at least 1)."""
    timeout: float
    """Seconds an attempt may run; overrides the handler's timeout."""
    run_at: datetime
    """Not before this moment (aware datetime)."""
    priority: int
    """Higher runs first."""
    queue: str
    """Workers started with ``--queue`` take only their queues' jobs."""
    owner: str
    """Whose job it is: the user whose client sees it (the sync service's users)."""
    after: Sequence[uuid.UUID | str]
    """Jobs (that exist already) this job runs after: it stays queued, without a turn,
    until every one of them ended (docs/workflows.md)."""
    on_failure: Literal["cancel", "run"]
    """When a job it runs after fails or is cancelled: ``"cancel"`` (the default) ends
    this job as cancelled, its error naming the cause; ``"run"`` runs it all the same."""


class JobOptions(BatchOptions, total=False):
    """:class:`BatchOptions`, and what only a single job can have."""

    unique_key: str
    """At most one unfinished (queued or running) job per key and owner: enqueueing
    again while one is unfinished returns that job's id and inserts nothing."""


def _params(
    kind: str, options: BatchOptions, allowed: frozenset[str], **values: Any
) -> dict[str, Any]:
    """The parameters of the enqueue queries: the job's options, then ``values``."""
    unknown = sorted(set(options) - allowed)
    if unknown:  # what mypy would catch, for callers it does not check
        raise TypeError(f"unknown option(s) {', '.join(unknown)}; options: {sorted(allowed)}")
    max_attempts = options.get("max_attempts")
    if max_attempts is not None and max_attempts < 1:
        raise ValueError("max_attempts must be at least 1")
    return {
        "kind": kind,
        "owner": options.get("owner"),
        "max_attempts": max_attempts,
        "timeout": options.get("timeout"),
        "run_at": options.get("run_at"),
        "priority": options.get("priority"),
        "queue": options.get("queue"),
        "waiting_for": len(options.get("after") or ()),  # at most; see the enqueue query
        **values,
    }


def _one(
    kind: str, payload: Any, job_id: uuid.UUID | None, options: JobOptions
) -> tuple[uuid.UUID, dict[str, Any]]:
    """A single job's id (new unless given) and the enqueue query's parameters."""
    job_id = job_id or uuid7()
    unique_key = options.get("unique_key")
    if unique_key is not None and not 0 < len(unique_key) <= MAX_NAME_LENGTH:
        raise ValueError(f"unique_key must have 1 to {MAX_NAME_LENGTH} characters")
    payload_json = dump_json({} if payload is None else payload)
    return job_id, _params(
        kind,
        options,
        JobOptions.__optional_keys__,
        id=job_id,
        payload=payload_json,
        unique_key=unique_key,
    )


def enqueue(
    conn: psycopg.Connection[Any],
    kind: str,
    payload: Any = None,
    *,
    id: uuid.UUID | None = None,  # noqa: A002 -- the column's name
    **options: Unpack[JobOptions],
) -> uuid.UUID:
    """Insert a job in ``conn``'s current transaction and return its id.

    The job becomes visible to workers when the caller commits, so it is enqueued if
    and only if the caller's own writes are. ``id`` makes the call idempotent: a second
    enqueue with the same id does nothing. With ``unique_key``, while a job with that
    key is unfinished, enqueueing again inserts nothing and returns that job's id.
    With ``after=[ids]`` the job runs once those jobs ended (``on_failure`` says what
    if one did not complete); an unknown id raises :class:`~errands.JobNotFound`.
    The options are :class:`JobOptions`.
    """
    job_id, params = _one(kind, payload, id, options)
    waits = _waits([job_id], options)
    if waits is None:
        return _insert(conn, job_id, params)[0]
    with _known_dependencies(), atomic(conn):
        job_id, new = _insert(conn, job_id, params)
        if new:  # an existing job keeps the dependencies it was created with
            conn.execute(query("wait_for"), waits)
    return job_id


def _insert(
    conn: psycopg.Connection[Any], job_id: uuid.UUID, params: dict[str, Any]
) -> tuple[uuid.UUID, bool]:
    """Insert one job; its id, and whether this call inserted it."""
    while True:
        if conn.execute(query("enqueue"), params).fetchone() is not None:
            return job_id, True
        existing = conn.execute(query("enqueue_existing"), params).fetchone()
        if existing is not None:
            return uuid.UUID(str(existing[0])), False
        # The job in the way finished between the two statements: try again.


async def enqueue_async(
    conn: psycopg.AsyncConnection[Any],
    kind: str,
    payload: Any = None,
    *,
    id: uuid.UUID | None = None,  # noqa: A002 -- the column's name
    **options: Unpack[JobOptions],
) -> uuid.UUID:
    """:func:`enqueue` for an asyncio connection."""
    job_id, params = _one(kind, payload, id, options)
    waits = _waits([job_id], options)
    if waits is None:
        return (await _insert_async(conn, job_id, params))[0]
    with _known_dependencies():
        async with atomic_async(conn):
            job_id, new = await _insert_async(conn, job_id, params)
            if new:
                await conn.execute(query("wait_for"), waits)
    return job_id


async def _insert_async(
    conn: psycopg.AsyncConnection[Any], job_id: uuid.UUID, params: dict[str, Any]
) -> tuple[uuid.UUID, bool]:
    """:func:`_insert` for an asyncio connection."""
    while True:
        if await (await conn.execute(query("enqueue"), params)).fetchone() is not None:
            return job_id, True
        existing = await (await conn.execute(query("enqueue_existing"), params)).fetchone()
        if existing is not None:
            return uuid.UUID(str(existing[0])), False


def _batch(
    kind: str, payloads: Iterable[Any], options: BatchOptions
) -> tuple[list[uuid.UUID], dict[str, Any]]:
    """New ids for a batch, and the enqueue_many query's parameters. The payloads go as
    one JSON array: a list of strings would be quoted and escaped element by element as
    a Postgres array (a third of the batch's time in Python)."""
    batch = [dump_json(payload) for payload in payloads]
    ids = uuid7_many(len(batch))
    payloads_json = "[" + ",".join(batch) + "]"
    return ids, _params(
        kind, options, BatchOptions.__optional_keys__, ids=ids, payloads=payloads_json
    )


def enqueue_many(
    conn: psycopg.Connection[Any],
    kind: str,
    payloads: Iterable[Any],
    **options: Unpack[BatchOptions],
) -> list[uuid.UUID]:
    """Insert many jobs of one kind in one statement; return their ids in order. With
    ``after``, every one of them runs after those jobs."""
    ids, params = _batch(kind, payloads, options)
    waits = _waits(ids, options)
    if not ids:
        return ids
    if waits is None:
        conn.execute(query("enqueue_many"), params)
        return ids
    with _known_dependencies(), atomic(conn):
        conn.execute(query("enqueue_many"), params)
        conn.execute(query("wait_for"), waits)  # the ids are new: every job was inserted
    return ids


async def enqueue_many_async(
    conn: psycopg.AsyncConnection[Any],
    kind: str,
    payloads: Iterable[Any],
    **options: Unpack[BatchOptions],
) -> list[uuid.UUID]:
    """:func:`enqueue_many` for an asyncio connection."""
    ids, params = _batch(kind, payloads, options)
    waits = _waits(ids, options)
    if not ids:
        return ids
    if waits is None:
        await conn.execute(query("enqueue_many"), params)
        return ids
    with _known_dependencies():
        async with atomic_async(conn):
            await conn.execute(query("enqueue_many"), params)
            await conn.execute(query("wait_for"), waits)
    return ids


def atomic(conn: psycopg.Connection[Any]) -> contextlib.AbstractContextManager[Any]:
    """A transaction for statements that must commit together: a new one on an
    autocommit connection outside a transaction block, else the caller's own (no
    savepoint: a workflow of 10,000 jobs would hold 10,000 subtransactions, a cost to
    every reader of the table; a failed statement aborts the caller's transaction, as
    any does)."""
    if conn.autocommit and conn.info.transaction_status == TransactionStatus.IDLE:
        return conn.transaction()
    return contextlib.nullcontext()


def atomic_async(conn: psycopg.AsyncConnection[Any]) -> contextlib.AbstractAsyncContextManager[Any]:
    """:func:`atomic` for an asyncio connection."""
    if conn.autocommit and conn.info.transaction_status == TransactionStatus.IDLE:
        return conn.transaction()
    return contextlib.nullcontext()


@contextlib.contextmanager
def _known_dependencies() -> Iterator[None]:
    """An unknown job in ``after`` raises :class:`~errands.JobNotFound` (nothing is
    inserted: the enqueue's transaction, or the caller's, is rolled back)."""
    try:
        yield
    except psycopg.errors.ForeignKeyViolation as exc:
        raise JobNotFound(str(exc.diag.message_primary or exc)) from exc


def _waits(ids: list[uuid.UUID], options: BatchOptions) -> dict[str, Any] | None:
    """The ``wait_for`` query's parameters, or None for jobs without dependencies."""
    on_failure = options.get("on_failure", "cancel")
    if on_failure not in ("cancel", "run"):
        raise ValueError(f"on_failure must be 'cancel' or 'run', not {on_failure!r}")
    after = options.get("after")
    if isinstance(after, str | uuid.UUID):
        raise TypeError("after takes a list of job ids")
    if not after:
        return None
    return {
        "jobs": ids,
        "after": [uuid.UUID(str(job_id)) for job_id in after],
        "on_failure": on_failure,
    }
