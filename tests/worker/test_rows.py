"""What the job tables keep once the triggers of migration 0009 run only where they
have work: the audit trail without its foreign key, and the rules of the row triggers
that now fire on a condition."""

from __future__ import annotations

from typing import Any

import psycopg

import errands


def test_deleting_jobs_deletes_their_events_and_only_theirs(conn: psycopg.Connection[Any]) -> None:
    gone = errands.enqueue_many(conn, "add", [{"a": 1, "b": 1}] * 3)
    kept = errands.enqueue(conn, "add", {"a": 1, "b": 1})
    # Any writer's DELETE, not only `errands prune`: plain SQL here.
    conn.execute("DELETE FROM background_jobs WHERE id = ANY(%s)", (gone,))
    left = conn.execute("SELECT job_id FROM job_events ORDER BY id").fetchall()
    assert left == [(kept,)]


def test_the_cancellation_rule_still_holds_for_every_writer(conn: psycopg.Connection[Any]) -> None:
    # A queued job inserted cancelled never starts; `completed` follows the state.
    [(cancelled, state, completed)] = conn.execute(
        "INSERT INTO background_jobs (id, kind, cancelled, completed)"
        " VALUES (gen_random_uuid(), 'add', true, true)"
        " RETURNING cancelled, state, completed"
    ).fetchall()
    assert (cancelled, state, completed) == (True, "cancelled", False)
    job_id = errands.enqueue(conn, "add", {"a": 1, "b": 1})
    [row] = conn.execute(
        "UPDATE background_jobs SET state = 'completed' WHERE id = %s RETURNING completed",
        (job_id,),
    ).fetchall()
    assert row == (True,)
    # A cancel that reaches a finished job leaves it as it ended.
    [row] = conn.execute(
        "UPDATE background_jobs SET cancelled = true WHERE id = %s RETURNING cancelled, state",
        (job_id,),
    ).fetchall()
    assert row == (False, "completed")
