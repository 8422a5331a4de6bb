"""Retries with backoff, max attempts and timeouts, each attempt's error kept."""

from __future__ import annotations

from typing import Any

import psycopg

import errands
from tests.worker.conftest import StartWorker, events, wait_for_state


def test_a_failing_job_is_retried_until_it_succeeds(
    conn: psycopg.Connection[Any], start_worker: StartWorker
) -> None:
    start_worker()
    job_id = errands.enqueue(conn, "flaky", {"succeed_on": 3}, max_attempts=5)
    row = wait_for_state(conn, job_id, "completed")
    assert row["result"] == "ok on attempt 3"
    assert row["attempts"] == 3
    assert row["error"] is None
    assert events(conn, job_id) == [
        "queued", "started", "retried", "started", "retried", "started", "completed",
    ]  # fmt: skip
    errors = conn.execute(
        "SELECT error FROM job_events WHERE job_id = %s AND type = 'retried' ORDER BY id",
        (job_id,),
    ).fetchall()
    messages = [e[0]["message"] for e in errors]
    assert messages == ["failure on attempt 1", "failure on attempt 2"]
    assert all("Traceback" in e[0]["traceback"] for e in errors)
    assert all("RuntimeError" in e[0]["traceback"] for e in errors)


def test_a_job_fails_for_good_after_max_attempts(
    conn: psycopg.Connection[Any], start_worker: StartWorker
) -> None:
    start_worker()
    job_id = errands.enqueue(conn, "flaky", {"succeed_on": 99}, max_attempts=2)
    row = wait_for_state(conn, job_id, "failed")
    assert row["attempts"] == 2
    assert row["completed"] is False
    assert row["error"]["message"] == "failure on attempt 2"
    assert row["error"]["attempt"] == 2
    assert row["finished_at"] is not None
    assert events(conn, job_id) == ["queued", "started", "retried", "started", "failed"]


def test_retries_back_off_exponentially(
    conn: psycopg.Connection[Any], start_worker: StartWorker
) -> None:
    start_worker()
    job_id = errands.enqueue(conn, "flaky", {"succeed_on": 4}, max_attempts=4)
    wait_for_state(conn, job_id, "completed")
    rows = conn.execute(
        "SELECT type, at, error FROM job_events"
        " WHERE job_id = %s AND type IN ('started', 'retried') ORDER BY id",
        (job_id,),
    ).fetchall()
    assert [r[0] for r in rows] == ["started", "retried"] * 3 + ["started"]
    retried = [(at, error["retry_in"]) for kind, at, error in rows if kind == "retried"]
    starts = [at for kind, at, _ in rows if kind == "started"]
    # The handler's base is 0.05 s: each delay lies in the upper half of its doubling
    # window (0.025-0.05, 0.05-0.1, 0.1-0.2 s), so each is at least the one before...
    delays = [delay for _, delay in retried]
    for attempt, delay in enumerate(delays, start=1):
        nominal = 0.05 * 2 ** (attempt - 1)
        assert nominal / 2 <= delay <= nominal, delays
    # ...and each retry really waited its delay before it started.
    for (failed_at, delay), started_at in zip(retried, starts[1:], strict=True):
        assert (started_at - failed_at).total_seconds() >= delay


def test_a_job_past_its_timeout_fails_with_a_timeout_error(
    conn: psycopg.Connection[Any], start_worker: StartWorker
) -> None:
    start_worker()
    slow_async = errands.enqueue(
        conn, "sleep_async", {"steps": 100, "step": 0.1}, timeout=0.5, max_attempts=1
    )
    slow_sync = errands.enqueue(
        conn, "sleep_sync", {"steps": 100, "step": 0.1}, timeout=0.5, max_attempts=1
    )
    for job_id in (slow_async, slow_sync):
        row = wait_for_state(conn, job_id, "failed")
        assert row["error"]["type"] == "JobTimeout"
        assert "timeout of 0.5s" in row["error"]["message"]
    # The worker goes on working.
    after = errands.enqueue(conn, "add", {"a": 1, "b": 1})
    assert wait_for_state(conn, after, "completed")["result"] == 2
