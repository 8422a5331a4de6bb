"""The operator's view of the queues: how deep each is, how old its oldest waiting job,
how much it finished lately, and pausing and resuming one.

A paused queue keeps its jobs and takes new ones; no worker claims from it (the claim
itself skips it, so every worker honours a pause at its next claim, with nothing to
restart), and the jobs already running finish. Resuming wakes the workers.

Every function takes a psycopg connection and has an ``_async`` twin. The queries are in
``sql/queues.sql``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, LiteralString

from psycopg.rows import class_row

from errands.operations import AnyAsyncConnection, AnyConnection, default_operator
from errands.queries import query
from errands.schedules import Schedule

QUEUES_QUERIES = "queues.sql"


def _q(name: str) -> LiteralString:
    return query(name, QUEUES_QUERIES)


@dataclass(frozen=True)
class QueueInfo:
    """One queue: jobs ready to run, scheduled for later and running; when the oldest
    ready one was received (by the server) and how many seconds ago; jobs completed
    and failed in the last hour; and whether, since when and by whom it is paused."""

    name: str
    ready: int
    scheduled: int
    running: int
    oldest_waiting: datetime | None
    oldest_age: float | None
    completed_last_hour: int
    failed_last_hour: int
    paused: bool
    paused_at: datetime | None
    paused_by: str | None


@dataclass(frozen=True)
class ScheduleRun:
    """A periodic schedule: its expression as the workers that run it declared it
    (None if none has since migration 0011), its next run, and its newest tick: when it
    was due, when its job was enqueued, and that job (its state None once the job is
    pruned; all four None if it never ran)."""

    name: str
    cron: str | None
    timezone: str | None
    kind: str | None
    seen_at: datetime | None
    last_tick: datetime | None
    enqueued_at: datetime | None
    job_id: uuid.UUID | None
    job_state: str | None
    next_run: datetime | None = None

    def __post_init__(self) -> None:
        if self.cron is not None and self.kind is not None and self.next_run is None:
            try:
                schedule = Schedule(
                    self.name, self.cron, self.kind, timezone=self.timezone or "UTC"
                )
            except ValueError:  # a time zone this host does not know: no next run shown
                return
            object.__setattr__(self, "next_run", schedule.next_after(datetime.now(UTC)))


def queues(conn: AnyConnection) -> list[QueueInfo]:
    """Every queue with jobs waiting or running, finished lately, paused, or named by a
    registered kind, by name."""
    with conn.cursor(row_factory=class_row(QueueInfo)) as cur:
        return cur.execute(_q("overview")).fetchall()


async def queues_async(conn: AnyAsyncConnection) -> list[QueueInfo]:
    """:func:`queues` for an asyncio connection."""
    async with conn.cursor(row_factory=class_row(QueueInfo)) as cur:
        await cur.execute(_q("overview"))
        return await cur.fetchall()


def _who(queue: str, operator: str | None) -> dict[str, Any]:
    if not queue or "\x00" in queue:
        raise ValueError("a queue's name is a non-empty text")
    return {"queue": queue, "operator": operator or default_operator()}


def pause(conn: AnyConnection, queue: str, *, operator: str | None = None) -> bool:
    """Pause ``queue``: no worker claims from it until :func:`resume`. False if it was
    already paused (by whoever paused it first)."""
    return conn.execute(_q("pause"), _who(queue, operator)).fetchone() is not None


async def pause_async(conn: AnyAsyncConnection, queue: str, *, operator: str | None = None) -> bool:
    """:func:`pause` for an asyncio connection."""
    cursor = await conn.execute(_q("pause"), _who(queue, operator))
    return await cursor.fetchone() is not None


def resume(conn: AnyConnection, queue: str, *, operator: str | None = None) -> bool:
    """Resume ``queue`` and wake the workers. False if it was not paused."""
    return conn.execute(_q("resume"), _who(queue, operator)).fetchone() is not None


async def resume_async(
    conn: AnyAsyncConnection, queue: str, *, operator: str | None = None
) -> bool:
    """:func:`resume` for an asyncio connection."""
    cursor = await conn.execute(_q("resume"), _who(queue, operator))
    return await cursor.fetchone() is not None


def schedule_runs(conn: AnyConnection) -> list[ScheduleRun]:
    """Each periodic schedule that ever ran, with its newest tick."""
    with conn.cursor(row_factory=class_row(ScheduleRun)) as cur:
        return cur.execute(_q("schedules")).fetchall()


async def schedule_runs_async(conn: AnyAsyncConnection) -> list[ScheduleRun]:
    """:func:`schedule_runs` for an asyncio connection."""
    async with conn.cursor(row_factory=class_row(ScheduleRun)) as cur:
        await cur.execute(_q("schedules"))
        return await cur.fetchall()
