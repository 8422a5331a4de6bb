"""Migration 0012 and the batched paths around it: the row triggers that now fire on a
condition keep their rules for every writer, a batched enqueue stores each payload with
its own id, and a worker claiming on two lanes runs every job once."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

import errands
from errands.ids import uuid7_many
from errands.payloads import PayloadError


def test_every_write_is_stamped_with_its_transaction(conn: psycopg.Connection[Any]) -> None:
    # Plain SQL that names a stale _txid is still stamped with its own transaction.
    with conn.transaction():
        [(stamped, current)] = conn.execute(
            "INSERT INTO background_jobs (id, kind, _txid) VALUES (gen_random_uuid(), 'add', '1')"
            " RETURNING _txid::text, pg_current_xact_id()::text"
        ).fetchall()
    assert stamped == current
    job_id = errands.enqueue(conn, "add", {"a": 1, "b": 2})
    [(before,)] = conn.execute("SELECT _txid FROM background_jobs WHERE id = %s", (job_id,))
    with conn.transaction():
        [(after, current)] = conn.execute(
            "UPDATE background_jobs SET progress = 0.5 WHERE id = %s"
            " RETURNING _txid::text, pg_current_xact_id()::text",
            (job_id,),
        ).fetchall()
    assert after == current != str(before)


def test_turns_are_given_by_the_same_rules_on_insert(conn: psycopg.Connection[Any]) -> None:
    def inserted(columns: str, values: str) -> Any:
        row = conn.execute(
            f"INSERT INTO background_jobs (id, kind, owner{columns})"
            f" VALUES (gen_random_uuid(), 'add', 'ann'{values}) RETURNING turn"
        ).fetchone()
        assert row is not None
        return row[0]

    first = inserted("", "")
    assert first is not None  # runnable now, no turn given: takes the owner's next one
    assert inserted("", "") == first + 1
    later = datetime.now(UTC) + timedelta(hours=1)
    # Not runnable yet, or waiting: no turn, even one the writer named.
    assert inserted(", run_at, turn", f", '{later.isoformat()}', 7") is None
    assert inserted(", waiting_for, turn", ", 1, 7") is None
    # A turn given with a runnable job is kept (enqueue_many gives its batch their turns).
    assert inserted(", turn", ", 99") == 99
    # A cancelled insert is not queued: no turn.
    assert inserted(", cancelled", ", true") is None


def test_a_job_sent_back_to_the_queue_takes_a_turn(conn: psycopg.Connection[Any]) -> None:
    job_id = errands.enqueue(conn, "add", {"a": 1, "b": 2}, owner="ann")
    conn.execute(
        "UPDATE background_jobs SET state = 'failed', finished_at = now(), turn = NULL"
        " WHERE id = %s",
        (job_id,),
    )
    conn.execute("UPDATE background_jobs SET state = 'queued' WHERE id = %s", (job_id,))
    row = conn.execute("SELECT turn FROM background_jobs WHERE id = %s", (job_id,)).fetchone()
    assert row is not None
    assert row[0] is not None


def test_a_batch_stores_each_payload_with_its_own_id(conn: psycopg.Connection[Any]) -> None:
    payloads: list[Any] = [
        {"seq": n, "text": f'quote " backslash \\ brace }} {n} \u2028 é 😀'} for n in range(300)
    ]
    payloads += [None, [], "a string", 3.5, {"deep": [[[{"x": None}]]]}, {"k": "[1, 2]"}]
    ids = errands.enqueue_many(conn, "add", payloads)
    rows = dict(
        conn.execute(
            "SELECT id, payload::text FROM background_jobs WHERE id = ANY(%s)", (ids,)
        ).fetchall()
    )
    assert len(rows) == len(payloads)
    for job_id, payload in zip(ids, payloads, strict=True):
        assert json.loads(rows[job_id]) == payload


def test_a_batch_with_an_unstorable_payload_inserts_nothing(
    conn: psycopg.Connection[Any],
) -> None:
    with pytest.raises(PayloadError):
        errands.enqueue_many(conn, "add", [{"ok": 1}, {"bad": "\ud800"}])
    with pytest.raises(PayloadError):
        errands.enqueue_many(conn, "add", [{1: "a key that is not a string"}])
    assert conn.execute("SELECT count(*) FROM background_jobs").fetchone() == (0,)


def test_batched_ids_are_version_7_and_distinct() -> None:
    ids = uuid7_many(10_000)
    assert len(set(ids)) == len(ids)
    assert {i.version for i in ids} == {7}
    assert {i.variant for i in ids} == {"specified in RFC 4122"}


def test_two_claim_lanes_run_every_job_exactly_once(
    conn: psycopg.Connection[Any], database_url: str
) -> None:
    ids = errands.enqueue_many(conn, "add", [{"n": n} for n in range(400)])
    registry = errands.Registry()
    seen: list[int] = []

    @registry.job("add")
    async def add(ctx: errands.JobContext, payload: dict[str, int]) -> None:
        seen.append(payload["n"])
        await asyncio.sleep(0)

    settings = errands.WorkerSettings(concurrency=8, claim_lanes=2, burst=True)
    asyncio.run(asyncio.wait_for(errands.Worker(registry, database_url, settings).run(), 120))
    assert sorted(seen) == list(range(400))
    counts = conn.execute(
        "SELECT count(*) FILTER (WHERE type = 'started'),"
        " count(*) FILTER (WHERE type = 'completed')"
        " FROM job_events WHERE job_id = ANY(%s) GROUP BY job_id",
        (ids,),
    ).fetchall()
    assert counts == [(1, 1)] * 400
    assert conn.execute(
        "SELECT count(*) FROM background_jobs WHERE state = 'completed'"
    ).fetchone() == (400,)
