"""Operator actions that are exact and accountable (issue 16): a bulk retry leaves jobs
whose unique key an unfinished job holds alone and says so, every action is an event
naming the operator (never a worker), and a waiting job can be run now or later."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

import errands
from errands import JobFilter, operations
from tests.operations.jobs import WORKER, end, start

Conn = psycopg.Connection[Any]


def failed_with_key(conn: Conn, key: str, owner: str = "alice") -> uuid.UUID:
    """A job with ``unique_key`` that ran and failed (its key is free again)."""
    job_id = errands.enqueue(conn, "resize", {"n": 1}, owner=owner, unique_key=key)
    start(conn, job_id)
    end(conn, job_id, "failed")
    return job_id


def event_rows(conn: Conn, job_id: uuid.UUID) -> list[tuple[str, str | None, str | None]]:
    return [(e.type, e.worker, e.operator) for e in errands.timeline(conn, job_id)]


def test_bulk_retry_holds_back_jobs_whose_unique_key_is_taken(conn: Conn) -> None:
    # Two failed jobs share a key; a third key is held by a queued job; a fourth is free.
    older, newer = failed_with_key(conn, "report-1"), failed_with_key(conn, "report-1")
    blocked = failed_with_key(conn, "report-2")
    holder = errands.enqueue(conn, "resize", {}, owner="alice", unique_key="report-2")
    free = failed_with_key(conn, "report-3")
    plain = failed_with_key(conn, "report-4", owner="bob")
    conn.execute("UPDATE background_jobs SET unique_key = NULL WHERE id = %s", (plain,))

    outcome = operations.act(conn, "retry", where=JobFilter(states=["failed"]), operator="ops")

    assert sorted(outcome.changed) == sorted([newer, free, plain])
    assert outcome.held == {older: "report-1", blocked: "report-2"}
    states = {j.id: j.state for j in errands.list_jobs(conn)}
    assert states == {
        older: "failed",
        newer: "queued",
        blocked: "failed",
        holder: "queued",
        free: "queued",
        plain: "queued",
    }
    # The plain API says what it re-queued, and never raises for a held key.
    assert errands.retry(conn, older, blocked) == []


def test_every_operator_action_names_the_operator_never_a_worker(conn: Conn) -> None:
    failed = failed_with_key(conn, "k")
    running = errands.enqueue(conn, "resize", {})
    start(conn, running)
    queued = errands.enqueue(conn, "resize", {})

    errands.retry(conn, failed, operator="alice-ops")
    errands.cancel(conn, running, queued, operator="bob-ops")

    assert event_rows(conn, failed)[-1] == ("retried", None, "alice-ops")
    assert event_rows(conn, running)[-1] == ("cancel_requested", None, "bob-ops")
    assert event_rows(conn, queued)[-1] == ("cancelled", None, "bob-ops")
    # The worker's own transitions still name the worker, and no operator.
    assert event_rows(conn, failed)[1] == ("started", WORKER, None)
    end(conn, running, "cancelled")
    assert event_rows(conn, running)[-1] == ("cancelled", WORKER, None)
    # A note is no attempt: the running job's one attempt ended as cancelled.
    runs = operations.attempts(errands.timeline(conn, running))
    assert [(r.number, r.outcome) for r in runs] == [(1, "cancelled")]


def test_an_unnamed_operator_is_the_local_user(conn: Conn) -> None:
    job = errands.enqueue(conn, "resize", {})
    errands.cancel(conn, job)
    assert event_rows(conn, job)[-1] == ("cancelled", None, operations.default_operator())
    assert "@" in operations.default_operator()


def test_run_now_and_reschedule_a_waiting_job(conn: Conn) -> None:
    later = datetime.now(UTC) + timedelta(hours=2)
    job = errands.enqueue(conn, "resize", {}, run_at=later)
    elsewhere = errands.enqueue(conn, "resize", {})
    start(conn, elsewhere)

    assert operations.reschedule(conn, job, elsewhere, operator="ops") == [job]
    moved = errands.get(conn, job)
    assert moved is not None
    assert moved.run_at <= datetime.now(UTC)
    assert event_rows(conn, job)[-1] == ("rescheduled", None, "ops")

    tomorrow = datetime.now(UTC) + timedelta(days=1)
    assert operations.reschedule(conn, job, run_at=tomorrow) == [job]
    again = errands.get(conn, job)
    assert again is not None
    assert again.run_at == tomorrow


def test_search_and_received_at_bounds_select_jobs(conn: Conn) -> None:
    match = errands.enqueue(conn, "resize", {"file": "Holiday-Photo.JPG"})
    errands.enqueue(conn, "resize", {"file": "other.png"})
    failed = failed_with_key(conn, "x")
    conn.execute(
        'UPDATE background_jobs SET error = \'{"message": "disk FULL"}\' WHERE id = %s',
        (failed,),
    )
    assert [j.id for j in errands.list_jobs(conn, JobFilter(search="holiday-photo"))] == [match]
    assert [j.id for j in errands.list_jobs(conn, JobFilter(search="disk full"))] == [failed]
    # A client's clock (timestamp) does not move a job out of a received_at window.
    conn.execute(
        "UPDATE background_jobs SET timestamp = now() - interval '10 days' WHERE id = %s",
        (match,),
    )
    hour_ago = datetime.now(UTC) - timedelta(hours=1)
    recent = errands.list_jobs(conn, JobFilter(received_since=hour_ago))
    assert match in {j.id for j in recent}
    assert len(recent) == 3
    assert JobFilter().empty
    assert not JobFilter(search="x").empty


def test_an_unknown_action_is_refused(conn: Conn) -> None:
    with pytest.raises(ValueError, match="unknown action 'explode'"):
        operations.act(conn, "explode", uuid.uuid4())


def test_the_oldest_waiting_job_is_by_the_servers_clock(conn: Conn) -> None:
    job = errands.enqueue(conn, "resize", {}, queue="mail")
    # A client whose clock is a year behind does not make its job look a year old.
    conn.execute(
        "UPDATE background_jobs SET timestamp = now() - interval '365 days' WHERE id = %s",
        (job,),
    )
    (depth,) = [q for q in operations.queues(conn) if q.queue == "mail"]
    assert depth.oldest_age is not None
    assert depth.oldest_age < 3600
