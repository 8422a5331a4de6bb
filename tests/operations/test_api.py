"""The operator's Python API (errands.operations) against a real database."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

import errands
from errands import JobFilter, operations
from tests.operations.jobs import WORKER, end, make_job, start

Conn = psycopg.Connection[Any]


def events(conn: Conn, job_id: uuid.UUID) -> list[tuple[str, int]]:
    return [(e.type, e.attempt) for e in errands.timeline(conn, job_id)]


def test_get_returns_the_row_and_none_for_an_unknown_id(conn: Conn) -> None:
    job_id = make_job(conn, "completed")
    job = errands.get(conn, job_id)
    assert job is not None
    assert (job.id, job.state, job.result, job.kind, job.done) == (
        job_id,
        "completed",
        42,
        "resize",
        True,
    )
    assert errands.get(conn, str(job_id)) == job
    assert errands.get(conn, uuid.uuid4()) is None


def test_list_and_count_filter_by_every_field(conn: Conn) -> None:
    failed = make_job(conn, "failed", "resize", queue="slow", owner="bob")
    done = make_job(conn, "completed", "resize")
    queued = make_job(conn, "queued", "email")
    assert [j.id for j in errands.list_jobs(conn)] == [queued, done, failed]
    assert [j.id for j in errands.list_jobs(conn, JobFilter(states=["failed"]))] == [failed]
    assert [j.id for j in errands.list_jobs(conn, JobFilter(kinds=["email"]))] == [queued]
    assert [j.id for j in errands.list_jobs(conn, JobFilter(queues=["slow"]))] == [failed]
    assert [j.id for j in errands.list_jobs(conn, JobFilter(owners=["bob"]))] == [failed]
    assert [j.id for j in errands.list_jobs(conn, limit=1, offset=1)] == [done]
    future = datetime.now(UTC) + timedelta(hours=1)
    assert errands.list_jobs(conn, JobFilter(since=future)) == []
    assert len(errands.list_jobs(conn, JobFilter(until=future))) == 3
    assert operations.count_jobs(conn, JobFilter(kinds=["resize"])) == {
        "failed": 1,
        "completed": 1,
    }


def test_a_filter_refuses_an_unknown_state() -> None:
    with pytest.raises(ValueError, match="unknown state 'finished'"):
        JobFilter(states=["finished"])


def test_actions_need_ids_or_a_filter(conn: Conn) -> None:
    make_job(conn, "queued")
    with pytest.raises(ValueError, match="give job ids"):
        errands.cancel(conn)
    assert errands.list_jobs(conn)[0].state == "queued"


def test_retry_requeues_failed_and_cancelled_jobs_and_keeps_their_history(conn: Conn) -> None:
    failed = make_job(conn, "failed")
    cancelled = make_job(conn, "cancelled")
    done = make_job(conn, "completed")
    assert sorted(errands.retry(conn, failed, cancelled, done)) == sorted([failed, cancelled])

    job = errands.get(conn, failed)
    assert job is not None
    assert (job.state, job.error, job.finished_at, job.attempts) == ("queued", None, None, 1)
    assert job.max_attempts == 3
    assert events(conn, failed) == [("queued", 0), ("started", 1), ("failed", 1), ("retried", 1)]
    assert errands.timeline(conn, failed)[2].error == {"type": "ValueError", "message": "boom"}
    again = errands.get(conn, cancelled)
    assert again is not None
    assert (again.state, again.cancelled) == ("queued", False)
    completed = errands.get(conn, done)
    assert completed is not None
    assert completed.state == "completed"


def test_retry_of_an_exhausted_job_grants_one_more_attempt(conn: Conn) -> None:
    job_id = make_job(conn, "queued")
    for _ in range(3):
        start(conn, job_id)
        end(conn, job_id, "failed")
        conn.execute("UPDATE background_jobs SET state = 'queued' WHERE id = %s", (job_id,))
    end(conn, job_id, "failed")
    errands.retry(conn, job_id)
    job = errands.get(conn, job_id)
    assert job is not None
    assert (job.attempts, job.max_attempts) == (3, 4)


def test_bulk_retry_by_filter(conn: Conn) -> None:
    resize = [make_job(conn, "failed", "resize") for _ in range(3)]
    email = make_job(conn, "failed", "email")
    retried = errands.retry(conn, where=JobFilter(states=["failed"], kinds=["resize"]))
    assert sorted(retried) == sorted(resize)
    assert operations.count_jobs(conn) == {"queued": 3, "failed": 1}
    # ids and a filter together: only the jobs matching both.
    assert errands.retry(conn, email, resize[0], where=JobFilter(kinds=["email"])) == [email]


def test_cancel_ends_a_queued_job_and_asks_a_running_one(conn: Conn) -> None:
    queued = make_job(conn, "queued")
    running = make_job(conn, "running")
    done = make_job(conn, "completed")
    assert sorted(errands.cancel(conn, queued, running, done)) == sorted([queued, running])
    states = {j.id: (j.state, j.cancelled) for j in errands.list_jobs(conn)}
    assert states == {
        queued: ("cancelled", True),
        running: ("running", True),
        done: ("completed", False),
    }
    assert errands.cancel(conn, running) == []  # already asked


def test_delete_removes_the_job_and_its_events(conn: Conn) -> None:
    gone = make_job(conn, "running")
    kept = make_job(conn, "failed")
    assert errands.delete(conn, gone) == [gone]
    assert errands.get(conn, gone) is None
    assert errands.timeline(conn, gone) == []
    assert [j.id for j in errands.list_jobs(conn)] == [kept]
    tombstones = conn.execute("SELECT key FROM errands_tombstones").fetchall()
    assert tombstones == [(str(gone),)]


def test_find_id_expands_a_unique_short_id(conn: Conn) -> None:
    job_id = make_job(conn)
    other = make_job(conn)
    assert operations.find_id(conn, str(job_id)[-8:]) == job_id
    assert operations.find_id(conn, str(other).upper()) == other
    with pytest.raises(errands.JobNotFound, match="no job"):
        operations.find_id(conn, "zzzz")
    with pytest.raises(errands.JobNotFound, match="not a job id"):
        errands.get(conn, "not-a-uuid")


def test_wait_is_woken_when_the_job_ends(conn: Conn, database_url: str) -> None:
    job_id = make_job(conn, "running")

    def finish() -> None:
        time.sleep(0.3)
        with psycopg.connect(database_url, autocommit=True) as other:
            end(other, job_id, "completed")

    thread = threading.Thread(target=finish)
    thread.start()
    started = time.monotonic()
    job = errands.wait(conn, job_id, timeout=30)
    waited = time.monotonic() - started
    thread.join()
    assert job.state == "completed"
    assert job.result == 42
    # Woken by the notification, not by the 2 s fallback read.
    assert waited < operations.WAIT_POLL_INTERVAL


def test_wait_times_out_and_refuses_a_transaction(conn: Conn, database_url: str) -> None:
    job_id = make_job(conn, "running")
    with pytest.raises(errands.WaitTimeout):
        errands.wait(conn, job_id, timeout=0.2)
    with pytest.raises(errands.JobNotFound):
        errands.wait(conn, uuid.uuid4(), timeout=1)
    with (
        psycopg.connect(database_url) as in_transaction,
        pytest.raises(ValueError, match="autocommit"),
    ):
        errands.wait(in_transaction, job_id, timeout=1)


def test_prune_deletes_only_old_finished_jobs_in_batches(conn: Conn) -> None:
    old = [make_job(conn, state, finished_ago=3600) for state in ("completed",) * 5]
    old_failed = make_job(conn, "failed", finished_ago=3600)
    recent = make_job(conn, "completed", finished_ago=10)
    queued = make_job(conn, "queued")
    running = make_job(conn, "running")
    assert operations.prunable(conn, 60).counts == {"completed": 5, "failed": 1}
    assert operations.prunable(conn, 60, ["failed"]).total == 1

    batches: list[int] = []
    assert errands.prune(conn, timedelta(minutes=1), batch_size=2, on_batch=batches.append) == 6
    assert batches == [2, 2, 2]
    left = {j.id for j in errands.list_jobs(conn)}
    assert left == {recent, queued, running}
    assert not set(old) & left
    assert errands.timeline(conn, old_failed) == []


def test_prune_refuses_unfinished_states(conn: Conn) -> None:
    make_job(conn, "queued")
    with pytest.raises(ValueError, match="only finished jobs"):
        errands.prune(conn, 0, ["queued"])
    assert operations.count_jobs(conn) == {"queued": 1}


def test_stats_counts_queues_and_workers(conn: Conn) -> None:
    make_job(conn, "queued", "resize")
    make_job(conn, "queued", "email", queue="mail")
    running = make_job(conn, "running", "resize")
    make_job(conn, "failed", "email")
    conn.execute(
        "INSERT INTO errands_workers (id, hostname, pid, kinds, lease_expires_at)"
        " VALUES (%s, 'test-host', 1, '{resize}', now() + interval '30 seconds')",
        (WORKER,),
    )
    result = errands.stats(conn)
    assert result.counts == {
        "email": {"queued": 1, "failed": 1},
        "resize": {"queued": 1, "running": 1},
    }
    assert result.by_state == {
        "queued": 2,
        "running": 1,
        "completed": 0,
        "failed": 1,
        "cancelled": 0,
    }
    assert [(q.queue, q.ready, q.scheduled) for q in result.queues] == [
        ("default", 1, 0),
        ("mail", 1, 0),
    ]
    assert result.oldest_queued == min(q.oldest for q in result.queues if q.oldest)
    [worker] = result.workers
    assert (worker.id, worker.hostname, worker.alive, worker.running) == (
        WORKER,
        "test-host",
        True,
        [running],
    )


def test_the_async_twins_do_the_same(database_url: str, conn: Conn) -> None:
    failed = make_job(conn, "failed")
    queued = make_job(conn, "queued")

    async def main() -> None:
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as aconn:
            job = await errands.get_async(aconn, failed)
            assert job is not None
            assert job.state == "failed"
            assert await errands.retry_async(aconn, failed) == [failed]
            assert await errands.cancel_async(aconn, queued) == [queued]
            done = await errands.wait_async(aconn, queued, timeout=5)
            assert done.state == "cancelled"
            listed = await errands.list_jobs_async(aconn, JobFilter(states=["queued"]))
            assert [j.id for j in listed] == [failed]
            assert [e.type for e in await errands.timeline_async(aconn, failed)][-1] == "retried"
            assert (await errands.stats_async(aconn)).by_state["queued"] == 1
            assert await errands.delete_async(aconn, queued) == [queued]
            await aconn.execute(
                "UPDATE background_jobs SET state = 'completed',"
                " finished_at = now() - interval '1 hour'"
            )
            assert await errands.prune_async(aconn, 60) == 1

    asyncio.run(main())
    assert errands.list_jobs(conn) == []


def test_every_operation_has_an_async_twin() -> None:
    for name in ("get", "wait", "cancel", "retry", "delete", "list_jobs", "timeline", "stats"):
        assert f"{name}_async" in errands.__all__
    for name in ("count_jobs", "workers", "prunable", "find_id", "prune"):
        assert callable(getattr(operations, f"{name}_async"))
