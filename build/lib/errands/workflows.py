"""Workflows on the server side: chains, groups with a ``then`` job, and a job's steps
(docs/workflows.md).

A workflow is jobs with dependencies (``enqueue(..., after=[...])``): each job waits,
queued and without a turn, until the jobs it runs after ended. The helpers here build
the common shapes in one transaction of the caller's connection, so a workflow is
enqueued whole or not at all::

    fetched, parsed, stored = errands.chain(conn, [("fetch", {}), ("parse", {}), ("store", {})])
    batch = errands.group(conn, [("resize", {"n": n}) for n in range(10)], then=("zip", {}))
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, NamedTuple, Unpack

import psycopg
from psycopg.rows import class_row

from errands.durable import Dependency
from errands.ids import uuid7
from errands.jobs import BatchOptions, atomic, atomic_async, enqueue, enqueue_async
from errands.payloads import dump_json
from errands.queries import query

JobSpec = tuple[str, Any]
"""A job to enqueue: its kind and payload."""


class Group(NamedTuple):
    """The jobs :func:`group` enqueued."""

    members: list[uuid.UUID]
    then: uuid.UUID | None
    """The job that runs once every member ended (None without ``then``)."""


class Step(NamedTuple):
    """A stored step of a job (``ctx.step``, ``ctx.sleep``)."""

    name: str
    result: Any
    attempt: int
    """The attempt that stored it."""
    at: datetime


Plan = list[tuple[str, Any, uuid.UUID, BatchOptions]]
"""Jobs to enqueue in order: kind, payload, id, options."""


def _chain_plan(jobs: Iterable[JobSpec], options: BatchOptions) -> Plan:
    """Each job after the one before; the first after ``options['after']``, if given."""
    plan: Plan = []
    after: Sequence[uuid.UUID | str] = options.get("after", ())
    for kind, payload in jobs:
        job_id = uuid7()
        plan.append((kind, payload, job_id, {**options, "after": after}))
        after = [job_id]
    return plan


def _group_plan(
    jobs: Iterable[JobSpec], then: JobSpec | None, options: BatchOptions
) -> tuple[Plan, Group]:
    """The members (each after ``options['after']``), then the ``then`` job after all."""
    plan: Plan = [(kind, payload, uuid7(), {**options}) for kind, payload in jobs]
    members = [job_id for _, _, job_id, _ in plan]
    then_id = None
    if then is not None:
        if not members:
            raise ValueError("a group's then job needs members to run after")
        then_id = uuid7()
        plan.append((then[0], then[1], then_id, {**options, "after": members}))
    return plan, Group(members, then_id)


def chain(
    conn: psycopg.Connection[Any], jobs: Iterable[JobSpec], **options: Unpack[BatchOptions]
) -> list[uuid.UUID]:
    """Enqueue ``jobs`` (``(kind, payload)`` pairs) to run one after another; their ids.

    A job runs only once the one before it completed; if one fails or is cancelled, the
    rest end cancelled (``on_failure="run"``: they run all the same). ``after`` makes
    the first job wait for other jobs; the other options apply to every job.
    """
    plan = _chain_plan(jobs, options)
    with atomic(conn):
        for kind, payload, job_id, job_options in plan:
            enqueue(conn, kind, payload, id=job_id, **job_options)
    return [job_id for _, _, job_id, _ in plan]


async def chain_async(
    conn: psycopg.AsyncConnection[Any], jobs: Iterable[JobSpec], **options: Unpack[BatchOptions]
) -> list[uuid.UUID]:
    """:func:`chain` for an asyncio connection."""
    plan = _chain_plan(jobs, options)
    async with atomic_async(conn):
        for kind, payload, job_id, job_options in plan:
            await enqueue_async(conn, kind, payload, id=job_id, **job_options)
    return [job_id for _, _, job_id, _ in plan]


def group(
    conn: psycopg.Connection[Any],
    jobs: Iterable[JobSpec],
    then: JobSpec | None = None,
    **options: Unpack[BatchOptions],
) -> Group:
    """Enqueue ``jobs`` to run side by side, and ``then`` to run once after all of them.

    The ``then`` job gets the members' results from ``ctx.results_of_dependencies()``.
    By default it is cancelled if a member fails or is cancelled; with
    ``on_failure="run"`` it runs once every member ended, however (a batch's callback).
    ``after`` makes every member wait for other jobs; the other options apply to all.
    """
    plan, enqueued = _group_plan(jobs, then, options)
    with atomic(conn):
        for kind, payload, job_id, job_options in plan:
            enqueue(conn, kind, payload, id=job_id, **job_options)
    return enqueued


async def group_async(
    conn: psycopg.AsyncConnection[Any],
    jobs: Iterable[JobSpec],
    then: JobSpec | None = None,
    **options: Unpack[BatchOptions],
) -> Group:
    """:func:`group` for an asyncio connection."""
    plan, enqueued = _group_plan(jobs, then, options)
    async with atomic_async(conn):
        for kind, payload, job_id, job_options in plan:
            await enqueue_async(conn, kind, payload, id=job_id, **job_options)
    return enqueued


def steps(conn: psycopg.Connection[Any], job_id: uuid.UUID | str) -> list[Step]:
    """The job's stored steps (and sleeps), oldest first."""
    with conn.cursor(row_factory=class_row(Step)) as cur:
        return cur.execute(query("steps"), {"id": uuid.UUID(str(job_id))}).fetchall()


async def steps_async(conn: psycopg.AsyncConnection[Any], job_id: uuid.UUID | str) -> list[Step]:
    """:func:`steps` for an asyncio connection."""
    async with conn.cursor(row_factory=class_row(Step)) as cur:
        await cur.execute(query("steps"), {"id": uuid.UUID(str(job_id))})
        return await cur.fetchall()


def dependencies(conn: psycopg.Connection[Any], job_id: uuid.UUID | str) -> list[Dependency]:
    """The jobs ``job_id`` runs after, in the order they were named, as they are now."""
    with conn.cursor(row_factory=class_row(Dependency)) as cur:
        return cur.execute(query("dependencies"), {"id": uuid.UUID(str(job_id))}).fetchall()


def answer(conn: psycopg.Connection[Any], job_id: uuid.UUID | str, value: Any) -> None:
    """Answer the question pending on a job (``ctx.ask``); the job then runs again and
    ``ctx.ask`` returns ``value``. ValueError if the job has no question waiting for an
    answer, or ``value`` is not one of its choices. For server code and operators: the
    owner's own answer, through the client, is not built yet (docs/workflows.md)."""
    params = {"id": uuid.UUID(str(job_id)), "answer": dump_json(value, "answer")}
    if conn.execute(query("answer"), params).fetchone() is None:
        raise _unanswerable(job_id, value)


async def answer_async(
    conn: psycopg.AsyncConnection[Any], job_id: uuid.UUID | str, value: Any
) -> None:
    """:func:`answer` for an asyncio connection."""
    params = {"id": uuid.UUID(str(job_id)), "answer": dump_json(value, "answer")}
    if await (await conn.execute(query("answer"), params)).fetchone() is None:
        raise _unanswerable(job_id, value)


def _unanswerable(job_id: uuid.UUID | str, value: Any) -> ValueError:
    return ValueError(
        f"job {job_id} has no question waiting for an answer, or {value!r:.80} is not one "
        "of its choices"
    )
