"""Cancellation: the recipe's ``cancelled = true`` request, queued and running."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

import errands
from tests.helpers import wait_for
from tests.worker.conftest import StartWorker, events, job, wait_for_state


def request_cancel(conn: psycopg.Connection[Any], job_id: object) -> None:
    conn.execute("UPDATE background_jobs SET cancelled = true WHERE id = %s", (job_id,))


def test_a_cancelled_queued_job_never_starts(
    conn: psycopg.Connection[Any], start_worker: StartWorker
) -> None:
    later = datetime.now(UTC) + timedelta(seconds=1)
    job_id = errands.enqueue(conn, "add", {"a": 1, "b": 1}, run_at=later)
    request_cancel(conn, job_id)
    start_worker()
    assert job(conn, job_id)["state"] == "cancelled"
    # Past its run_at, with a worker waiting, it still does not start.
    marker = errands.enqueue(conn, "add", {"a": 0, "b": 0}, run_at=later)
    wait_for_state(conn, marker, "completed")
    row = job(conn, job_id)
    assert row["state"] == "cancelled"
    assert row["attempts"] == 0
    assert row["started_at"] is None
    assert events(conn, job_id) == ["queued", "cancelled"]


def test_a_row_inserted_already_cancelled_never_starts(conn: psycopg.Connection[Any]) -> None:
    conn.execute(
        "INSERT INTO background_jobs (id, payload, cancelled)"
        " VALUES (gen_random_uuid(), '{}', true)"
    )
    row = conn.execute("SELECT state, finished_at FROM background_jobs").fetchone()
    assert row is not None
    assert row[0] == "cancelled"
    assert row[1] is not None


@pytest.mark.parametrize("kind", ["sleep_async", "sleep_sync"])
def test_a_running_job_ends_as_cancelled(
    conn: psycopg.Connection[Any], start_worker: StartWorker, kind: str
) -> None:
    start_worker()
    job_id = errands.enqueue(conn, kind, {"steps": 300, "step": 0.05})
    # Some progress written: the handler is really running.
    wait_for(lambda: job(conn, job_id)["progress"] > 0, what="progress")
    request_cancel(conn, job_id)
    row = wait_for_state(conn, job_id, "cancelled", "completed", "failed")
    assert row["state"] == "cancelled"
    assert row["completed"] is False
    assert row["progress"] < 1
    assert row["finished_at"] is not None
    assert events(conn, job_id) == ["queued", "started", "cancelled"]


def test_a_cancel_that_reaches_a_finished_job_leaves_it_as_it_was(
    conn: psycopg.Connection[Any], start_worker: StartWorker
) -> None:
    start_worker()
    completed = errands.enqueue(conn, "add", {"a": 1, "b": 1})
    failed = errands.enqueue(conn, "flaky", {"succeed_on": 9}, max_attempts=1)
    ended = {job_id: wait_for_state(conn, job_id, "completed", "failed")
             for job_id in (completed, failed)}  # fmt: skip
    for job_id, before in ended.items():
        request_cancel(conn, job_id)
        after = job(conn, job_id)
        assert after["cancelled"] is False
        assert (after["state"], after["completed"], after["finished_at"]) == (
            before["state"],
            before["completed"],
            before["finished_at"],
        )
    assert events(conn, completed) == ["queued", "started", "completed"]
    assert events(conn, failed) == ["queued", "started", "failed"]
