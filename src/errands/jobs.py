"""Server-side enqueue: a job inserted inside the caller's own transaction."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any, TypedDict, Unpack

import psycopg

from errands.ids import uuid7
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
    The options are :class:`JobOptions`.
    """
    job_id, params = _one(kind, payload, id, options)
    while True:
        if conn.execute(query("enqueue"), params).fetchone() is not None:
            return job_id
        existing = conn.execute(query("enqueue_existing"), params).fetchone()
        if existing is not None:
            return uuid.UUID(str(existing[0]))
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
    while True:
        if await (await conn.execute(query("enqueue"), params)).fetchone() is not None:
            return job_id
        existing = await (await conn.execute(query("enqueue_existing"), params)).fetchone()
        if existing is not None:
            return uuid.UUID(str(existing[0]))


def _batch(
    kind: str, payloads: Iterable[Any], options: BatchOptions
) -> tuple[list[uuid.UUID], dict[str, Any]]:
    """New ids for a batch, and the enqueue_many query's parameters."""
    batch = [dump_json(payload) for payload in payloads]
    ids = [uuid7() for _ in batch]
    return ids, _params(kind, options, BatchOptions.__optional_keys__, ids=ids, payloads=batch)


def enqueue_many(
    conn: psycopg.Connection[Any],
    kind: str,
    payloads: Iterable[Any],
    **options: Unpack[BatchOptions],
) -> list[uuid.UUID]:
    """Insert many jobs of one kind in one statement; return their ids in order."""
    ids, params = _batch(kind, payloads, options)
    if ids:
        conn.execute(query("enqueue_many"), params)
    return ids


async def enqueue_many_async(
    conn: psycopg.AsyncConnection[Any],
    kind: str,
    payloads: Iterable[Any],
    **options: Unpack[BatchOptions],
) -> list[uuid.UUID]:
    """:func:`enqueue_many` for an asyncio connection."""
    ids, params = _batch(kind, payloads, options)
    if ids:
        await conn.execute(query("enqueue_many"), params)
    return ids
