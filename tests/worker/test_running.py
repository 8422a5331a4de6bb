"""A real worker process runs jobs: recipe rows, enqueue(), unknown kinds, bad input."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import psycopg
import pytest

import errands
from tests.worker.conftest import StartWorker, events, job, wait_for_state


def test_a_recipe_style_sql_insert_runs_as_kind_default(
    conn: psycopg.Connection[Any], start_worker: StartWorker
) -> None:
    start_worker()
    job_id = uuid.uuid4()
    conn.execute(
        """INSERT INTO background_jobs (id, "timestamp", payload, completed, cancelled, progress)
           VALUES (%s, now(), '{"hello": "world"}', false, false, 0)""",
        (job_id,),
    )
    row = wait_for_state(conn, job_id, "completed")
    assert row["kind"] == "default"
    assert row["completed"] is True
    assert row["progress"] == 1
    assert row["result"] == {"echo": {"hello": "world"}}
    assert row["attempts"] == 1
    assert row["started_at"] <= row["finished_at"]
    assert events(conn, job_id) == ["queued", "started", "completed"]


def test_enqueue_is_transactional(
    conn: psycopg.Connection[Any], database_url: str, start_worker: StartWorker
) -> None:
    start_worker()
    with psycopg.connect(database_url) as tx:
        rolled_back = errands.enqueue(tx, "add", {"a": 1, "b": 1})
        tx.rollback()
        committed = errands.enqueue(tx, "add", {"a": 2, "b": 3}, priority=5)
        tx.commit()
    assert wait_for_state(conn, committed, "completed")["result"] == 5
    count = conn.execute("SELECT count(*) FROM background_jobs WHERE id = %s", (rolled_back,))
    assert count.fetchone() == (0,)


def test_enqueue_with_an_id_is_idempotent(conn: psycopg.Connection[Any]) -> None:
    job_id = errands.enqueue(conn, "add", {"a": 1, "b": 2})
    again = errands.enqueue(conn, "add", {"a": 9, "b": 9}, id=job_id)
    assert again == job_id
    assert job(conn, job_id)["payload"] == {"a": 1, "b": 2}


def test_enqueue_many_runs_every_job(
    conn: psycopg.Connection[Any], start_worker: StartWorker
) -> None:
    ids = errands.enqueue_many(conn, "add", [{"a": i, "b": i} for i in range(50)])
    start_worker("--concurrency", "4")
    for i, job_id in enumerate(ids):
        assert wait_for_state(conn, job_id, "completed")["result"] == 2 * i


def test_progress_reaches_the_row_throttled(
    conn: psycopg.Connection[Any], start_worker: StartWorker
) -> None:
    start_worker()
    job_id = errands.enqueue(conn, "sleep_async", {"steps": 20, "step": 0.1})
    seen = set()
    row = wait_for_state(conn, job_id, "running")
    while row["state"] == "running":
        seen.add((row["progress"], row["progress_message"]))
        row = job(conn, job_id)
    assert row["state"] == "completed"
    # Some intermediate progress was written, with its message...
    assert any(0 < p < 1 and m and m.startswith("step ") for p, m in seen)
    # ...but fewer writes than progress calls: the worker throttles them.
    assert len(seen) < 20


def test_a_job_of_an_unknown_kind_stays_queued_visibly(
    conn: psycopg.Connection[Any], start_worker: StartWorker
) -> None:
    unknown = errands.enqueue(conn, "nobody_handles_this", {})
    worker = start_worker()
    known = errands.enqueue(conn, "add", {"a": 1, "b": 1})
    wait_for_state(conn, known, "completed")
    assert job(conn, unknown)["state"] == "queued"
    assert job(conn, unknown)["attempts"] == 0
    worker.wait_for_output("'nobody_handles_this' wait for a worker")


def test_queues_limit_what_a_worker_takes(
    conn: psycopg.Connection[Any], start_worker: StartWorker
) -> None:
    start_worker("--queue", "images")
    other = errands.enqueue(conn, "add", {"a": 1, "b": 1}, queue="emails")
    mine = errands.enqueue(conn, "add", {"a": 1, "b": 2}, queue="images")
    wait_for_state(conn, mine, "completed")
    assert job(conn, other)["state"] == "queued"


def test_a_result_that_is_not_json_fails_the_job_clearly(
    conn: psycopg.Connection[Any], start_worker: StartWorker
) -> None:
    start_worker()
    job_id = errands.enqueue(conn, "bad_result", {}, max_attempts=1)
    row = wait_for_state(conn, job_id, "failed")
    assert row["error"]["type"] == "PayloadError"
    assert "result is not JSON-serialisable" in row["error"]["message"]


def test_handlers_raising_base_exceptions_fail_the_job_not_the_worker(
    conn: psycopg.Connection[Any], start_worker: StartWorker
) -> None:
    worker = start_worker()
    exits = errands.enqueue(conn, "exits", {}, max_attempts=1)
    interrupts = errands.enqueue(conn, "interrupts", {}, max_attempts=1)
    assert wait_for_state(conn, exits, "failed")["error"]["type"] == "SystemExit"
    assert wait_for_state(conn, interrupts, "failed")["error"]["type"] == "KeyboardInterrupt"
    after = errands.enqueue(conn, "add", {"a": 1, "b": 1})
    assert wait_for_state(conn, after, "completed")["result"] == 2
    assert worker.running()


def test_enqueue_refuses_a_payload_that_is_not_json(conn: psycopg.Connection[Any]) -> None:
    with pytest.raises(errands.PayloadError, match="not JSON-serialisable"):
        errands.enqueue(conn, "add", {"when": object()})
    assert conn.execute("SELECT count(*) FROM background_jobs").fetchone() == (0,)


def test_enqueue_async_inserts_in_the_callers_transaction(database_url: str) -> None:
    async def enqueue_then_roll_back() -> tuple[uuid.UUID, uuid.UUID]:
        async with await psycopg.AsyncConnection.connect(database_url) as aconn:
            kept = await errands.enqueue_async(aconn, "add", {"a": 1, "b": 1})
            await aconn.commit()
            dropped = await errands.enqueue_async(aconn, "add", {"a": 1, "b": 1})
            await aconn.rollback()
            return kept, dropped

    kept, dropped = asyncio.run(enqueue_then_roll_back())
    with psycopg.connect(database_url) as conn:
        found = conn.execute("SELECT id FROM background_jobs").fetchall()
    assert found == [(kept,)]
    assert dropped != kept


def test_what_postgres_cannot_store_fails_the_job_not_the_worker(
    conn: psycopg.Connection[Any], start_worker: StartWorker
) -> None:
    start_worker()
    bad_result = errands.enqueue(conn, "nul_result", {}, max_attempts=1)
    bad_error = errands.enqueue(conn, "nul_error", {}, max_attempts=1)
    row = wait_for_state(conn, bad_result, "failed")
    assert "NUL character" in row["error"]["message"]
    row = wait_for_state(conn, bad_error, "failed")
    assert row["error"]["message"].startswith("a NUL \\x00 and a lone surrogate")
    after = errands.enqueue(conn, "add", {"a": 1, "b": 1})
    assert wait_for_state(conn, after, "completed")["result"] == 2


def test_a_result_postgres_refuses_fails_that_job_and_no_other(
    conn: psycopg.Connection[Any], start_worker: StartWorker
) -> None:
    start_worker("--concurrency", "4")
    refused = errands.enqueue(conn, "huge_number", {}, max_attempts=1)
    others = errands.enqueue_many(conn, "add", [{"a": i, "b": 0} for i in range(10)])
    row = wait_for_state(conn, refused, "failed")
    assert row["error"]["type"] == "StorageError"
    for i, job_id in enumerate(others):
        assert wait_for_state(conn, job_id, "completed")["result"] == i
