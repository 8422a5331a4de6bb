"""Jobs in given states, made the way a worker would leave them (through the same
triggers), for the operator tests."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg

import errands

WORKER = "test-host:1:abcd"


def make_job(
    conn: psycopg.Connection[Any],
    state: str = "queued",
    kind: str = "resize",
    *,
    queue: str = "default",
    owner: str | None = "alice",
    finished_ago: float = 0.0,
) -> uuid.UUID:
    """A job of ``kind`` that went through the transitions to ``state``; a finished one
    finished ``finished_ago`` seconds ago."""
    job_id = errands.enqueue(conn, kind, {"n": 1}, queue=queue, owner=owner)
    if state == "queued":
        return job_id
    if state == "cancelled":
        conn.execute("UPDATE background_jobs SET cancelled = true WHERE id = %s", (job_id,))
    else:
        start(conn, job_id)
        if state != "running":
            end(conn, job_id, state)
    conn.execute(
        "UPDATE background_jobs SET finished_at = now() - make_interval(secs => %s)"
        " WHERE id = %s AND finished_at IS NOT NULL",
        (finished_ago, job_id),
    )
    return job_id


def start(conn: psycopg.Connection[Any], job_id: uuid.UUID) -> None:
    """Claim the job as a worker does."""
    conn.execute(
        "UPDATE background_jobs SET state = 'running', attempts = attempts + 1,"
        " lease_owner = %s, started_at = now() WHERE id = %s",
        (WORKER, job_id),
    )


def end(conn: psycopg.Connection[Any], job_id: uuid.UUID, state: str) -> None:
    """Finish the job as a worker does (a failure with an error)."""
    error = '{"type": "ValueError", "message": "boom"}' if state == "failed" else None
    conn.execute(
        "UPDATE background_jobs SET state = %s, error = %s, finished_at = now(),"
        " result = CASE WHEN %s = 'completed' THEN '42'::jsonb END WHERE id = %s",
        (state, error, state, job_id),
    )
