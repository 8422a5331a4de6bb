"""The client benchmark: from ``Client.submit()`` to the result visible in the replica.

    .venv/bin/python bench/client_bench.py [--jobs 200] [--burst 200] [--database-url URL]

On a fresh database it starts a real ``errands server`` (``--insecure``) and a real
``errands worker`` running an echo handler, connects a ``Client`` and measures:

* round trip, one job at a time: ``submit()`` -> the completed row is in the replica
  (local insert, upload, claim, run, write back, change capture, live pull, apply);
* ``submit()`` alone: the local, durable SQLite insert;
* burst: ``--burst`` jobs submitted at once, until every result is in the replica.

Bounded: every wait has a deadline (``--timeout``); all processes stop at the end.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

import errands
from errands.migrations import migrate
from worker_bench import fresh_database, server_url

ROOT = Path(__file__).resolve().parent.parent
KIND = "default"
"""The recipe's job, an echo (tests/worker/handlers.py): the pipeline is what is timed."""


@contextmanager
def process(*args: str) -> Iterator[subprocess.Popen[bytes]]:
    """``errands ARGS`` in a subprocess, terminated at the end."""
    child = subprocess.Popen(
        [sys.executable, "-m", "errands", *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield child
    finally:
        child.terminate()
        try:
            child.wait(15)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def free_port() -> int:
    """A port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until_up(url: str, timeout: float) -> None:
    """Wait until the sync service answers HTTP."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{url}/v1/me", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise SystemExit(f"the sync service did not come up at {url}")


def percentile(values: list[float], share: float) -> float:
    """The ``share`` quantile (0..1), nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


def describe(name: str, seconds: list[float]) -> str:
    """One line: the distribution of ``seconds`` in milliseconds."""
    ms = [s * 1000 for s in seconds]
    return (
        f"{name:<34} n={len(ms):<5} p50={percentile(ms, 0.5):8.2f} ms  "
        f"p99={percentile(ms, 0.99):8.2f} ms  mean={statistics.fmean(ms):8.2f} ms  "
        f"max={max(ms):8.2f} ms"
    )


def round_trips(
    client: errands.Client, jobs: int, timeout: float
) -> tuple[list[float], list[float]]:
    """One job at a time: submit() alone, and submit() -> completed in the replica."""
    submits: list[float] = []
    totals: list[float] = []
    for n in range(jobs):
        start = time.perf_counter()
        job = client.submit(KIND, {"n": n})
        submits.append(time.perf_counter() - start)
        done = client.wait(job.id, timeout=timeout)
        totals.append(time.perf_counter() - start)
        if done.state != "completed" or done.result != {"echo": {"n": n}}:
            raise SystemExit(f"job {job.id} ended {done.state} with {done.result!r}")
    return submits, totals


def burst(client: errands.Client, jobs: int, timeout: float) -> float:
    """Submit ``jobs`` at once; seconds until every result is in the replica."""
    start = time.perf_counter()
    ids = [client.submit(KIND, {"n": n}).id for n in range(jobs)]
    for job_id in ids:
        if client.wait(job_id, timeout=timeout).state != "completed":
            raise SystemExit(f"job {job_id} did not complete")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=200, help="round trips to time")
    parser.add_argument("--burst", type=int, default=200, help="jobs in the burst")
    parser.add_argument("--database-url", help="a Postgres server to create databases on")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per job, at most")
    args = parser.parse_args()

    with (
        fresh_database(server_url(args.database_url), "client") as db,
        tempfile.TemporaryDirectory() as tmp,
    ):
        url = db.url
        migrate(url)
        port = free_port()
        sync_url = f"http://127.0.0.1:{port}"
        serve = ("server", "--database-url", url, "--port", str(port), "--insecure")
        work = ("worker", "tests.worker.handlers:registry", "--database-url", url)
        with process(*serve), process(*work, "--concurrency", "16"):
            wait_until_up(sync_url, args.timeout)
            with errands.Client(replica=Path(tmp) / "bench.db", server=sync_url) as client:
                client.connect()
                client.wait(client.submit(KIND, {}).id, timeout=args.timeout)  # warm up
                submits, totals = round_trips(client, args.jobs, args.timeout)
                burst_seconds = burst(client, args.burst, args.timeout)
    print(f"errands client benchmark ({args.jobs} round trips, one at a time, online)")
    print(describe("submit() -> result in the replica", totals))
    print(describe("submit() alone (local, durable)", submits))
    print(
        f"burst: {args.burst} jobs submitted at once, all results in the replica after "
        f"{burst_seconds:.2f} s ({args.burst / burst_seconds:.0f} jobs/s)"
    )


if __name__ == "__main__":
    main()
