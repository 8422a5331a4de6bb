"""Migrations 0015 and 0017: what a claim and a finish pay besides claiming and
finishing stays small. A claim's staging costs the same whatever the table
holds and whatever the planner knows about it. 0013's probe for questions past their
deadline read the whole table on every claim until the table's first ANALYZE (the
planner's guess for ``question_deadline <= now()`` made a sequential scan look cheap);
the probes now ask for min() of their partial index, which is read from its first
entry. Counted in buffers and calls, not timed."""

from __future__ import annotations

from typing import Any

import psycopg

import errands
from errands.queries import query
from errands.worker.finishing import Finisher, Outcome


def _blocks(conn: psycopg.Connection[Any], statement: str) -> int:
    """Buffers read or hit by ``statement``, the functions it calls included."""
    row = conn.execute(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {statement}").fetchone()
    assert row is not None
    plan = row[0][0]["Plan"]
    return int(plan["Shared Hit Blocks"]) + int(plan["Shared Read Blocks"])


def test_staging_reads_its_indexes_not_the_table(conn: psycopg.Connection[Any]) -> None:
    # Never analysed, as a new table is (and a busy one between two autovacuums).
    conn.execute("ALTER TABLE background_jobs SET (autovacuum_enabled = false)")
    for _ in range(6):
        errands.enqueue_many(conn, "add", [{"a": n, "b": 1} for n in range(1000)])
    [(analysed,)] = conn.execute(
        "SELECT count(*) FROM pg_stats WHERE tablename = 'background_jobs'"
    ).fetchall()
    assert analysed == 0
    [(pages,)] = conn.execute(
        "SELECT pg_relation_size('background_jobs') / current_setting('block_size')::int"
    ).fetchall()
    assert pages > 100
    _blocks(conn, "SELECT errands_stage_due(100)")  # the first call plans; claims reuse it
    staging = _blocks(conn, "SELECT errands_stage_due(100)")
    assert staging <= 10, f"staging read {staging} of the table's {pages} pages"
    # And the claim, with staging inside it, still claims what it should.
    claimed = conn.execute("SELECT id FROM errands_claim('w', ARRAY['add'], NULL, 16)").fetchall()
    assert len(claimed) == 16


def test_claims_and_finishes_stamp_their_rows_without_row_triggers(
    conn: psycopg.Connection[Any],
) -> None:
    # Migration 0017: the worker's statements set _txid and `completed` themselves, so the
    # row triggers that would (three PL/pgSQL calls a job) do not fire; other writers
    # still go through them. Counted in calls, in this transaction's own statistics.
    *ids, ninth, tenth = errands.enqueue_many(conn, "add", [{"a": n} for n in range(10)])
    finisher = Finisher("w")
    claim = {"kinds": ["add"], "queues": None}
    conn.autocommit = False
    conn.execute("SET LOCAL track_functions = 'pl'")
    claimed = conn.execute(
        query("claim_jobs"), {**finisher.outcomes([]), **claim, "limit": 8}
    ).fetchall()
    assert {row[1] for row in claimed} == set(ids)
    calls = dict(conn.execute("SELECT funcname, calls FROM pg_stat_xact_user_functions"))
    assert calls.get("errands_claim_kinds") == 1  # counting works
    assert "errands_sync_stamp" not in calls
    conn.commit()
    # As a busy worker does, in a later transaction: the eight end (seven done, one
    # retried) and the ninth is claimed, in one statement; the first row says which ended.
    conn.execute("SET LOCAL track_functions = 'pl'")
    ended = [Outcome(job, "completed", result="1") for job in ids[:7]]
    ended.append(Outcome(ids[7], "queued", error='{"type": "E"}', retry_in=60.0))
    head, *claimed = conn.execute(
        query("claim_jobs"), {**finisher.outcomes(ended), **claim, "limit": 1}
    ).fetchall()
    assert set(head[0]) == set(ids)
    assert head[1] is None
    assert [row[1] for row in claimed] == [ninth]
    conn.execute("UPDATE background_jobs SET priority = 1 WHERE id = %s", (tenth,))
    calls = dict(conn.execute("SELECT funcname, calls FROM pg_stat_xact_user_functions"))
    assert calls.get("errands_finish") == 1
    assert calls.get("errands_sync_stamp") == 1  # the plain UPDATE of the tenth only
    assert "errands_cancel_queued" not in calls
    stamped = conn.execute(
        "SELECT count(*) FILTER (WHERE _txid = pg_current_xact_id()),"
        " count(*) FILTER (WHERE completed = (state = 'completed')),"
        " count(*) FILTER (WHERE state = 'completed')"
        " FROM background_jobs WHERE id = ANY(%s)",
        ([*ids, ninth, tenth],),
    ).fetchone()
    assert stamped == (10, 10, 7)
    conn.rollback()
