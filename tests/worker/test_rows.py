"""What the job tables keep once the triggers of migration 0009 run only where they
have work: the audit trail without its foreign key, and the rules of the row triggers
that now fire on a condition."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
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


def test_a_batch_takes_the_turns_its_jobs_would_take_one_by_one(
    conn: psycopg.Connection[Any],
) -> None:
    def turns(ids: list[Any]) -> list[int | None]:
        found = dict(conn.execute("SELECT id, turn FROM background_jobs").fetchall())
        return [found[job_id] for job_id in ids]

    job = {"a": 1, "b": 1}
    # enqueue_many works the turns out once for the batch; one by one, the trigger does.
    batch = errands.enqueue_many(conn, "add", [job] * 3, owner="batch")
    single = [errands.enqueue(conn, "add", job, owner="single") for _ in range(3)]
    assert turns(batch) == turns(single) == [0, 1, 2]
    more = errands.enqueue_many(conn, "add", [job] * 2, owner="batch")
    assert turns(more) == [3, 4]
    # Not runnable yet: no turn until it comes due (the claim stages it then).
    later = datetime.now(UTC) + timedelta(hours=1)
    scheduled = errands.enqueue_many(conn, "add", [job] * 2, owner="later", run_at=later)
    assert turns(scheduled) == [None, None]
