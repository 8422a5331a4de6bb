"""Fair share under a hostile user: does one user at its limits slow another's reads?

    .venv/bin/python bench/hostile_bench.py [--reads 300] [--rounds 2] [--rate 10]
                                            [--database-url URL]

One ``errands server`` with its default limits (64 live readers, 16 distinct shapes per
user). ``bob`` reads his shape (50 jobs) with plain requests, one after another, and
each read's latency is measured. In the *idle* phase nobody else is there; in the
*hostile* phase ``mallory``, from another process, opens as many event streams as the
service lets her (she asks for 1,000, each on a filter of its own; the service refuses
what is past her limits with 429) and a writer commits ``--rate`` changes a second to
her jobs, so that every shape she holds is queried at every change batch. Phases
alternate ``--rounds`` times.

Reported: bob's p50 / p99 read latency per phase, the ratio hostile / idle of the p99
(the goal: at most 2x), and how many of mallory's streams were accepted and refused.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg

from errands.sync.auth import make_token
from sync_bench import fresh_database, server_url

ROOT = Path(__file__).resolve().parent.parent
SECRET = "hostile-bench-secret-0123456789abcdef01"
SHAPE = "/v1/shapes/background_jobs"
FIRST = 64
ROWS = 50
SETTLE = 3.0


@contextlib.contextmanager
def sync_server(database_url: str, *options: str) -> Iterator[str]:
    """``errands server`` (its default limits unless ``options`` say otherwise); its URL."""
    command = ["server", "--database-url", database_url, "--port", "0", *options]
    process = subprocess.Popen(
        [sys.executable, "-m", "errands", *command],
        env={**os.environ, "PYTHONPATH": str(ROOT / "src"), "ERRANDS_SECRET": SECRET},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    ready = threading.Event()
    lines: list[str] = []

    def drain() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if "listening on" in line:
                ready.set()

    threading.Thread(target=drain, daemon=True).start()
    try:
        if not ready.wait(60):
            raise SystemExit("errands server did not start:\n" + "".join(lines))
        yield lines[-1].rsplit(" ", 1)[-1].strip()
    finally:
        process.terminate()
        process.wait(30)


def seed(database_url: str) -> list[str]:
    """50 jobs each for bob and mallory; mallory's keys."""
    with psycopg.connect(database_url) as conn:
        for owner in ("bob", "mallory"):
            conn.execute(
                "INSERT INTO background_jobs (id, kind, owner)"
                " SELECT gen_random_uuid(), 'k' || (n %% 16), %s FROM generate_series(1, %s) n",
                (owner, ROWS),
            )
        rows = conn.execute("SELECT id FROM background_jobs WHERE owner = 'mallory'").fetchall()
    return [str(r[0]) for r in rows]


def percentile(values: list[float], fraction: float) -> float:
    """The nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def bob_reads(url: str, reads: int) -> list[float]:
    """Latencies (ms) of ``reads`` plain reads of bob's whole shape; a read that fails
    (the service unavailable) counts as infinitely slow."""
    headers = {"Authorization": f"Bearer {make_token(SECRET, 'bob')}"}
    latencies = []
    with httpx.Client(base_url=url, headers=headers, timeout=60) as bob:
        bob.get(SHAPE, params={"offset": "-1"})  # the connection, warm
        for _ in range(reads):
            started = time.perf_counter()
            answer = bob.get(SHAPE, params={"offset": "-1"})
            answer.json()
            elapsed = (time.perf_counter() - started) * 1000
            latencies.append(elapsed if answer.status_code == 200 else math.inf)
    return latencies


def mallory(url: str, asked: int, counts: Any, stop: Any) -> None:
    """In a process of her own: ask for ``asked`` streams, hold what is granted."""

    async def hold() -> None:
        headers = {"Authorization": f"Bearer {make_token(SECRET, 'mallory')}"}
        limits = httpx.Limits(max_connections=max(asked, 1))
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60, limits=limits) as c:

            async def one(n: int) -> None:
                # Her first 64 on 16 filters (the default limits), then 936 of their own.
                shape = n % 16 if n < FIRST else n
                where = json.dumps([{"column": "kind", "op": "ne", "value": f"x{shape}"}])
                params = {"offset": "-1", "where": where}
                try:
                    async with c.stream("GET", f"{SHAPE}/stream", params=params) as stream:
                        counts[stream.status_code] = counts.get(stream.status_code, 0) + 1
                        if stream.status_code == 200:
                            async for _ in stream.aiter_bytes():
                                if stop.is_set():
                                    return
                except httpx.HTTPError:
                    counts["error"] = counts.get("error", 0) + 1

            tasks = [asyncio.create_task(one(n)) for n in range(min(FIRST, asked))]
            await asyncio.sleep(1)
            tasks += [asyncio.create_task(one(n)) for n in range(FIRST, asked)]
            await asyncio.to_thread(stop.wait)  # a manager's event, set by another process
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(hold())


def writer(database_url: str, keys: list[str], rate: float, stop: threading.Event) -> None:
    """Commit ``rate`` progress updates a second to mallory's jobs."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        n = 0
        while not stop.wait(1 / rate):
            conn.execute(
                "UPDATE background_jobs SET progress = %s WHERE id = %s",
                ((n % 100) / 100, keys[n % len(keys)]),
            )
            n += 1


def hostile_phase(
    url: str, database_url: str, keys: list[str], args: argparse.Namespace
) -> tuple[list[float], dict[Any, int]]:
    """Bob's read latencies while mallory holds her limits and her jobs change."""
    with multiprocessing.Manager() as manager:
        counts = manager.dict()
        stop = manager.Event()
        process = multiprocessing.Process(target=mallory, args=(url, args.streams, counts, stop))
        process.start()
        done = threading.Event()
        writing = threading.Thread(target=writer, args=(database_url, keys, args.rate, done))
        writing.start()
        try:
            # Her streams open (and the rest are refused) before bob starts reading.
            deadline = time.monotonic() + 120
            while sum(counts.values()) < args.streams and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(SETTLE)
            latencies = bob_reads(url, args.reads)
            held = dict(counts)
        finally:
            stop.set()
            done.set()
            writing.join()
            process.join(30)
    return latencies, held


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reads", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument(
        "--streams", type=int, default=1000, help="mallory's streams (0: a control run)"
    )
    parser.add_argument("--database-url", default=os.environ.get("ERRANDS_BENCH_DATABASE_URL"))
    parser.add_argument("--max-live-readers", type=int, help="the server limit (default: its own)")
    parser.add_argument("--max-shapes", type=int, help="the server's limit (default: its own)")
    args = parser.parse_args()
    options = []
    if args.max_live_readers:
        options += ["--max-live-readers", str(args.max_live_readers)]
    if args.max_shapes:
        options += ["--max-shapes", str(args.max_shapes)]
    with fresh_database(server_url(args.database_url)) as database_url:
        keys = seed(database_url)
        with sync_server(database_url, *options) as url:
            ratios = []
            for round_number in range(1, args.rounds + 1):
                idle = bob_reads(url, args.reads)
                hostile, held = hostile_phase(url, database_url, keys, args)
                ratio = percentile(hostile, 0.99) / percentile(idle, 0.99)
                ratios.append(ratio)
                failed = sum(math.isinf(x) for x in hostile)
                print(
                    f"round {round_number}: bob's read p50/p99 idle "
                    f"{statistics.median(idle):.1f}/{percentile(idle, 0.99):.1f} ms, with "
                    f"mallory at her limits {statistics.median(hostile):.1f}/"
                    f"{percentile(hostile, 0.99):.1f} ms: p99 x{ratio:.2f}; mallory's "
                    f"streams: {held.get(200, 0)} accepted, {held.get(429, 0)} refused (429), "
                    f"{held.get('error', 0)} failed; {failed} of bob's reads failed",
                    flush=True,
                )
            worst = max(ratios)
            verdict = "meets" if worst <= 2 else "misses"
            print(f"p99 ratio, worst of {args.rounds} rounds: x{worst:.2f} ({verdict} the 2x goal)")


if __name__ == "__main__":
    main()
