"""What a batched enqueue pays for: its rate with parts of the schema taken out.

    .venv/bin/python bench/enqueue_bounds.py [--rounds 3] [--batches 30] [--batch-size 1000]

Each variant runs on a fresh copy of a migrated database, with the variant's SQL applied
first: ``enqueue_many_async`` of ``--batch-size`` small payloads, ``--batches`` times in a
loop, on one autocommit connection. Rounds are interleaved, each in a rotated order;
the report gives the median [lowest-highest] and the ratio to the schema as it is.
These are bounds, not designs: each variant drops something errands needs (its audit
event, a notification, an index some reader uses). bench/README.md, "Fifth round",
says what each is for.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import psycopg

import errands
from worker_bench import fresh_database, server_url

NO_QUEUED_EVENT = """
CREATE OR REPLACE FUNCTION errands_after_insert() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE queues text;
BEGIN
    SELECT string_agg(DISTINCT queue, ',') INTO queues FROM new_rows WHERE state = 'queued';
    IF queues IS NOT NULL THEN PERFORM errands_wake(queues); END IF;
    RETURN NULL;
END $$;
"""
NO_INSERT_TRIGGERS = """
DROP TRIGGER background_jobs_after_insert ON background_jobs;
DROP TRIGGER background_jobs_sync_notify_insert ON background_jobs;
"""
NO_CONSOLE_TURN_INDEXES = """
DROP INDEX background_jobs_state_received_idx;
DROP INDEX background_jobs_owner_turn_idx;
"""
NO_SYNC_RECEIVED_INDEXES = """
DROP INDEX background_jobs_txid_idx;
DROP INDEX background_jobs_received_idx;
"""

VARIANTS = {
    "as it is": "",
    "no queued event": NO_QUEUED_EVENT,
    "no insert triggers": NO_INSERT_TRIGGERS,
    "no event, state and turn indexes": NO_QUEUED_EVENT + NO_CONSOLE_TURN_INDEXES,
    "no event, only pkey + claim index": (
        NO_QUEUED_EVENT + NO_CONSOLE_TURN_INDEXES + NO_SYNC_RECEIVED_INDEXES
    ),
}


async def rate(url: str, batches: int, size: int) -> float:
    """Jobs a second of ``batches`` batched enqueues of ``size`` (after one warm-up)."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        payloads = [{"seq": i} for i in range(size)]
        await errands.enqueue_many_async(conn, "k", payloads)
        started = time.perf_counter()
        for _ in range(batches):
            await errands.enqueue_many_async(conn, "k", payloads)
        return batches * size / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", help="a server to create databases on")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=1000)
    args = parser.parse_args()
    server = server_url(args.database_url)
    names = list(VARIANTS)
    rates: dict[str, list[float]] = {name: [] for name in names}
    with fresh_database(server, "template") as template:
        errands.migrate(template.url)
        for round_ in range(args.rounds):
            shift = round_ % len(names)
            for name in names[shift:] + names[:shift]:
                with fresh_database(server, "bounds", template.name) as db:
                    if VARIANTS[name]:
                        with psycopg.connect(db.url, autocommit=True) as conn:
                            conn.execute(VARIANTS[name].encode())
                    rates[name].append(asyncio.run(rate(db.url, args.batches, args.batch_size)))
                print(f"round {round_ + 1}: {name}: {rates[name][-1]:,.0f} jobs/s", flush=True)
    base = statistics.median(rates[names[0]])
    print(f"\nbatched enqueue of {args.batch_size}, {args.rounds} rounds, median [range]:")
    for name in names:
        median = statistics.median(rates[name])
        low, high = min(rates[name]), max(rates[name])
        print(f"  {name:36s} {median:9,.0f} [{low:,.0f}-{high:,.0f}]  {median / base:.2f}x")


if __name__ == "__main__":
    main()
