"""Migration 0015: what a claim pays besides claiming stays small whatever the table
holds and whatever the planner knows about it. 0013's probe for questions past their
deadline read the whole table on every claim until the table's first ANALYZE (the
planner's guess for ``question_deadline <= now()`` made a sequential scan look cheap);
the probes now ask for min() of their partial index, which is read from its first
entry. Counted in buffers, not timed."""

from __future__ import annotations

from typing import Any

import psycopg

import errands


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
