"""Where a drained job's time goes: one errands worker under cProfile, its statements
counted.

    .venv/bin/python bench/worker_profile.py [--jobs 20000] [--concurrency 16] [--top 25]
        [--sort tottime|cumulative]

A fresh database gets ``--jobs`` no-op jobs (batch API); one in-process worker drains
them in burst mode under cProfile. Reported per job: wall time, the worker process's
CPU, the statements it sent by name (counted by wrapping psycopg's cursors), the
round trips of its asyncio connections (each ``Link.execute`` is one statement) and the
functions that took the most time.
``pg_stat_statements`` is not needed (nor loaded on every server).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import logging
import pstats
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import uvloop
from psycopg.conninfo import make_conninfo

import errands
from errands.queries import queries
from errands.worker.connections import Link

LOCAL_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"


@contextmanager
def fresh_database(server: str) -> Iterator[str]:
    """A migrated database of its own, dropped afterwards."""
    name = f"errands_profile_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"'.encode())
    url = make_conninfo(server, dbname=name)
    try:
        errands.migrate(url)
        yield url
    finally:
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)'.encode())


def count_statements() -> Counter[str]:
    """Count every statement psycopg's async cursors send, by query name."""
    names = {sql: name for name, sql in queries().items()}
    sent: Counter[str] = Counter()
    execute = psycopg.AsyncCursor.execute

    async def counted(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        sent[names.get(query, str(query).split()[0])] += 1
        return await execute(self, query, *args, **kwargs)

    psycopg.AsyncCursor.execute = counted  # type: ignore[method-assign]
    return sent


def count_round_trips() -> Counter[str]:
    """Count the worker's round trips (``Link.execute`` calls)."""
    trips: Counter[str] = Counter()
    execute = Link.execute

    async def counted(self: Link, *args: Any, **kwargs: Any) -> Any:
        trips["round trips"] += 1
        return await execute(self, *args, **kwargs)

    Link.execute = counted  # type: ignore[method-assign]
    return trips


def main() -> None:
    """Fill, drain under cProfile, report per job."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url", default=LOCAL_SERVER)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument(
        "--sort", choices=["tottime", "cumulative"], default="tottime", help="the profile's order"
    )
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    parser.add_argument("--no-profile", action="store_true", help="time it without cProfile")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    registry = errands.Registry()

    @registry.job("noop")
    async def noop(ctx: errands.JobContext, payload: Any) -> None:
        return None

    with fresh_database(args.database_url) as url:
        with psycopg.connect(url, autocommit=True) as conn:
            for first in range(0, args.jobs, 1000):
                errands.enqueue_many(conn, "noop", [{}] * min(1000, args.jobs - first))
            conn.execute("CHECKPOINT")
        sent = count_statements()
        trips = count_round_trips()
        settings = errands.WorkerSettings(concurrency=args.concurrency, burst=True)
        worker = errands.Worker(registry, url, settings)
        profile = cProfile.Profile()
        wall, cpu = time.perf_counter(), time.process_time()
        if not args.no_profile:
            profile.enable()
        if args.loop == "uvloop":
            uvloop.run(worker.run())
        else:
            asyncio.run(worker.run())
        profile.disable()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        with psycopg.connect(url) as conn:
            done = conn.execute("SELECT count(*) FROM background_jobs WHERE completed").fetchone()
    jobs = args.jobs
    print(f"{jobs} jobs, concurrency {args.concurrency}, completed {done[0] if done else 0}")
    print(f"wall {wall:.2f}s ({jobs / wall:,.0f} jobs/s, {wall / jobs * 1e6:.0f} us/job)")
    under = "" if args.no_profile else ", under cProfile"
    print(f"worker CPU {cpu:.2f}s ({cpu / jobs * 1e6:.0f} us/job{under}), {args.loop} loop")
    total = trips["round trips"]
    print(f"round trips {total} ({jobs / max(total, 1):.1f} jobs each, one statement each)")
    print("statements sent (per job):")
    for name, count in sent.most_common():
        print(f"  {name:<24} {count:>7}  {count / jobs:.3f}")
    if args.no_profile:
        return
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats(args.sort).print_stats(args.top)
    print(out.getvalue())


if __name__ == "__main__":
    main()
