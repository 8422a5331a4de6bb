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


def _params(kind: str, payload: Any, options: JobOptions, job_id: uuid.UUID) -> dict[str, Any]:
    if options.max_attempts < 1:
        raise ValueError("max_attempts must be at least 1")
    return {
        "id": job_id,
        "kind": kind,
        "payload": dump_json(payload),
        "owner": options.owner,
        "max_attempts": options.max_attempts,
        "timeout": options.timeout,
        "run_at": options.run_at,
        "priority": options.priority,
        "queue": options.queue,
    }


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
    job_id = id or uuid7()
    params = _params(kind, {} if payload is None else payload, JobOptions(**options), job_id)
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
    job_id = id or uuid7()
    params = _params(kind, {} if payload is None else payload, JobOptions(**options), job_id)
    await conn.execute(query("enqueue"), params)
    return job_id


def enqueue_many(
    conn: psycopg.Connection[Any], kind: str, payloads: Iterable[Any], **options: Any
) -> list[uuid.UUID]:
    """Insert many jobs of one kind in one round trip; return their ids in order."""
    job_options = JobOptions(**options)
    rows = [_params(kind, payload, job_options, uuid7()) for payload in payloads]
    with conn.cursor() as cur:
        cur.executemany(query("enqueue"), rows)
    return [row["id"] for row in rows]
