"""Server-side enqueue: a job inserted inside the caller's own transaction."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from errands.ids import uuid7
from errands.payloads import dump_json
from errands.queries import query

STATES = ("queued", "running", "completed", "failed", "cancelled")
FINAL_STATES = frozenset({"completed", "failed", "cancelled"})


@dataclass(frozen=True)
class JobOptions:
    """How a job is scheduled and retried."""

    max_attempts: int = 3
    timeout: float | None = None
    run_at: datetime | None = None
    priority: int = 0
    queue: str = "default"
    owner: str | None = None


def _params(kind: str, options: dict[str, Any], **values: Any) -> dict[str, Any]:
    """The parameters of the enqueue queries: the job's options, then ``values``."""
    job = JobOptions(**options)
    if job.max_attempts < 1:
        raise ValueError("max_attempts must be at least 1")
    return {
        "kind": kind,
        "owner": job.owner,
        "max_attempts": job.max_attempts,
        "timeout": job.timeout,
        "run_at": job.run_at,
        "priority": job.priority,
        "queue": job.queue,
        **values,
    }


def _one(
    kind: str, payload: Any, job_id: uuid.UUID | None, options: dict[str, Any]
) -> tuple[uuid.UUID, dict[str, Any]]:
    """A single job's id (new unless given) and the enqueue query's parameters."""
    job_id = job_id or uuid7()
    payload_json = dump_json({} if payload is None else payload)
    return job_id, _params(kind, options, id=job_id, payload=payload_json)


def enqueue(
    conn: psycopg.Connection[Any],
    kind: str,
    payload: Any = None,
    *,
    id: uuid.UUID | None = None,  # noqa: A002 -- the column's name
    **options: Any,
) -> uuid.UUID:
    """Insert a job in ``conn``'s current transaction and return its id.

    The job becomes visible to workers when the caller commits, so it is enqueued if
    and only if the caller's own writes are. ``id`` makes the call idempotent: a second
    enqueue with the same id does nothing. Other keywords are :class:`JobOptions`.
    """
    job_id, params = _one(kind, payload, id, options)
    conn.execute(query("enqueue"), params)
    return job_id


async def enqueue_async(
    conn: psycopg.AsyncConnection[Any],
    kind: str,
    payload: Any = None,
    *,
    id: uuid.UUID | None = None,  # noqa: A002 -- the column's name
    **options: Any,
) -> uuid.UUID:
    """:func:`enqueue` for an asyncio connection."""
    job_id, params = _one(kind, payload, id, options)
    await conn.execute(query("enqueue"), params)
    return job_id


def enqueue_many(
    conn: psycopg.Connection[Any], kind: str, payloads: Iterable[Any], **options: Any
) -> list[uuid.UUID]:
    """Insert many jobs of one kind in one statement; return their ids in order."""
    batch = [dump_json(payload) for payload in payloads]
    ids = [uuid7() for _ in batch]
    if batch:
        conn.execute(query("enqueue_many"), _params(kind, options, ids=ids, payloads=batch))
    return ids
