"""The workflow benchmark: a graph of jobs drained under SIGKILLs, and what dependencies
cost the jobs that have none.

    .venv/bin/python bench/workflow_bench.py [--jobs 10000] [--workers 3] [--kills 3]
        [--plain 10000] [--runs 3]

* **graph**: ``--jobs`` jobs in layers of ``--width``, each after one to three jobs of
  the layer before (seeded), enqueued with ``errands.enqueue(after=...)`` in one
  transaction; ``--workers`` real ``errands worker`` processes (concurrency 16) drain
  it while one of them is SIGKILLed ``--kills`` times (and replaced at once). Checked:
  every job completed (in the database); from the handlers' own notes, every job ran,
  none before every job it runs after had completed (each handler reads their states as
  it starts: the rows' timestamps cannot tell, as ``now()`` is a transaction's start
  time), and how many ran twice (those a killed worker held: at-least-once, as
  documented).
* **claims without dependencies**: ``--plain`` no-op jobs drained by one ``errands
  worker --burst --concurrency 16``, timed in the database (first ``started_at`` to last
  ``finished_at``), with migration 0010's release trigger enabled and disabled
  (``ALTER TABLE ... DISABLE TRIGGER``), ``--runs`` times each, interleaved. The
  difference is what dependencies cost a job that has none.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

import errands

LOCAL_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
BENCH_DIR = Path(__file__).resolve().parent
TRIGGER = "background_jobs_dependencies_ended"


def fresh_database(server: str) -> str:
    """A new, migrated database on ``server``; its URL."""
    name = f"errands_bench_workflow_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = make_conninfo(server, dbname=name)
    errands.migrate(url)
    return url


def drop_database(server: str, url: str) -> None:
    """Drop a benchmark database."""
    name = conninfo_to_dict(url)["dbname"]
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def worker(url: str, *args: str) -> subprocess.Popen[bytes]:
    """An ``errands worker`` of this folder's handlers."""
    return subprocess.Popen(
        [sys.executable, "-m", "errands", "worker", "workflow_bench_jobs:registry",
         "--database-url", url, "--concurrency", "16", "--lease", "3",
         "--heartbeat-interval", "0.5", *args],
        cwd=BENCH_DIR,
        env={**os.environ, "PYTHONPATH": str(BENCH_DIR)},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip


def graph(conn: psycopg.Connection[Any], log: Path, jobs: int, width: int) -> None:
    """Enqueue the layered graph in one transaction."""
    rng = random.Random(17)
    previous: list[uuid.UUID] = []
    with conn.transaction():
        for start in range(0, jobs, width):
            layer = [
                errands.enqueue(
                    conn,
                    "node",
                    {"log": str(log)},
                    after=rng.sample(previous, min(len(previous), rng.randint(1, 3))),
                )
                for _ in range(min(width, jobs - start))
            ]
            previous = layer


def ran(log: Path) -> int:
    """How many job runs the handlers noted."""
    return len(log.read_text().splitlines()) if log.exists() else 0


def count(conn: psycopg.Connection[Any], sql: str) -> int:
    [(n,)] = conn.execute(sql.encode()).fetchall()
    return int(n)


def run_graph(server: str, jobs: int, width: int, workers: int, kills: int) -> None:
    url = fresh_database(server)
    try:
        with tempfile.TemporaryDirectory() as folder, psycopg.connect(url, autocommit=True) as conn:
            log = Path(folder) / "runs"
            started = time.monotonic()
            graph(conn, log, jobs, width)
            enqueued = time.monotonic() - started
            print(f"graph: {jobs} jobs enqueued with after= in {enqueued:.1f}s "
                  f"({jobs / enqueued:.0f} jobs/s, one transaction)")  # fmt: skip
            procs = [worker(url) for _ in range(workers)]
            started = time.monotonic()
            for kill in range(kills):
                target = jobs * (kill + 1) // (kills + 1)
                while ran(log) < target:
                    time.sleep(0.2)
                procs[0].send_signal(signal.SIGKILL)
                procs[0].wait()
                procs[0] = worker(url)
                print(f"  SIGKILLed a worker after {target} jobs had run")
            done = "SELECT count(*) FROM background_jobs WHERE finished_at IS NOT NULL"
            while count(conn, done) < jobs:
                time.sleep(0.5)
            drained = time.monotonic() - started
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            for proc in procs:
                proc.wait()
            completed = count(
                conn, "SELECT count(*) FROM background_jobs WHERE state = 'completed'"
            )
            notes = [line.split() for line in log.read_text().splitlines()]
            early = sum(1 for _, ready in notes if ready != "ok")
            runs = Counter(job_id for job_id, _ in notes)
            twice = sum(1 for n in runs.values() if n > 1)
            print(f"graph: drained by {workers} workers (c=16), {kills} SIGKILLs, in "
                  f"{drained:.1f}s ({jobs / drained:.0f} jobs/s): {completed}/{jobs} completed, "
                  f"{early} started before a dependency finished, {len(runs)} ran, "
                  f"{twice} ran twice (held by a killed worker)")  # fmt: skip
            ids = {str(i) for (i,) in conn.execute("SELECT id FROM background_jobs")}
            if set(runs) != ids:
                print(f"graph: ran, not in the table: {sorted(set(runs) - ids)[:5]}; "
                      f"in the table, never ran: {sorted(ids - set(runs))[:5]}")  # fmt: skip
            if completed != jobs or early or set(runs) != ids:
                sys.exit("graph: WRONG")
    finally:
        drop_database(server, url)


def plain_drain(server: str, jobs: int, *, trigger: bool) -> float:
    """Seconds one burst worker takes to drain ``jobs`` jobs without dependencies."""
    url = fresh_database(server)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            if not trigger:
                conn.execute(f"ALTER TABLE background_jobs DISABLE TRIGGER {TRIGGER}".encode())
            for start in range(0, jobs, 1000):
                errands.enqueue_many(conn, "noop", [None] * min(1000, jobs - start))
            conn.execute("VACUUM ANALYZE background_jobs")
            worker(url, "--burst").wait()
            [(seconds, n)] = conn.execute(
                """SELECT extract(epoch FROM max(finished_at) - min(started_at))::float8,
                          count(*) FILTER (WHERE state = 'completed')
                   FROM background_jobs"""
            ).fetchall()
            if n != jobs:
                sys.exit(f"plain drain: {n} of {jobs} completed")
            return float(seconds)
    finally:
        drop_database(server, url)


def run_plain(server: str, jobs: int, runs: int) -> None:
    times: dict[bool, list[float]] = {True: [], False: []}
    for round_ in range(runs):
        for trigger in (True, False) if round_ % 2 == 0 else (False, True):
            times[trigger].append(plain_drain(server, jobs, trigger=trigger))
    for trigger, label in ((False, "trigger disabled"), (True, "trigger enabled (0010)")):
        seconds = times[trigger]
        print(f"plain drain c=16, {jobs} jobs, {label}: median "
              f"{jobs / statistics.median(seconds):.0f} jobs/s "
              f"(runs: {', '.join(f'{jobs / s:.0f}' for s in seconds)})")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--database-url", default=os.environ.get("ERRANDS_BENCH_DATABASE_URL", LOCAL_SERVER)
    )
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--width", type=int, default=200)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--plain", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    run_graph(args.database_url, args.jobs, args.width, args.workers, args.kills)
    if args.plain:
        run_plain(args.database_url, args.plain, args.runs)


if __name__ == "__main__":
    main()
