"""A paused queue, with a real worker process: nothing of it is claimed a second after
the pause (what runs finishes), other queues carry on, and a resume wakes the worker."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

import errands
from errands import queues
from tests.client.processes import start_worker
from tests.helpers import ErrandsProcess, wait_for

Conn = psycopg.Connection[Any]


@pytest.fixture
def worker(database_url: str) -> Iterator[ErrandsProcess]:
    process = start_worker(database_url)
    try:
        process.wait_for_output("started", timeout=30)
        yield process
    finally:
        process.close()


def states(conn: Conn, queue: str) -> dict[str, int]:
    rows = conn.execute(
        "SELECT state, count(*) FROM background_jobs WHERE queue = %s GROUP BY state", (queue,)
    )
    return dict(rows.fetchall())


def test_a_paused_queue_is_not_claimed_from_until_resumed(
    conn: Conn, worker: ErrandsProcess
) -> None:
    steady = [
        errands.enqueue(conn, "sleep_async", {"steps": 1, "step": 0.05}, queue="steady")
        for _ in range(200)
    ]
    wait_for(lambda: states(conn, "steady").get("completed", 0) >= 5, timeout=30, what="work")

    assert queues.pause(conn, "steady", operator="ops")
    other = errands.enqueue(conn, "add", {"a": 1, "b": 2}, queue="other")
    wait_for(lambda: states(conn, "other") == {"completed": 1}, timeout=30, what="other queue")
    wait_for(lambda: states(conn, "steady").get("running", 0) == 0, timeout=30, what="drain")

    late = conn.execute(
        "SELECT count(*) FROM background_jobs j, errands_queue_pauses p"
        " WHERE j.queue = 'steady' AND p.queue = 'steady'"
        " AND j.started_at > p.paused_at + interval '1 second'"
    ).fetchone()
    assert late == (0,)
    left = states(conn, "steady").get("queued", 0)
    assert left > 0  # the pause stopped it with work left
    (info,) = [q for q in queues.queues(conn) if q.name == "steady"]
    assert (info.paused, info.paused_by, info.ready) == (True, "ops", left)

    assert queues.resume(conn, "steady")
    wait_for(
        lambda: states(conn, "steady") == {"completed": len(steady)}, timeout=60, what="resume"
    )
    assert errands.get(conn, other) is not None
