"""The sync benchmark: N live clients on one ``errands server``, a writer updating rows.

    .venv/bin/python bench/sync_bench.py [--clients 1,100,1000] [--mode sse,poll]
                                         [--seconds 8] [--rate 10] [--database-url URL]

For each mode and number of clients: one ``errands server`` process (defaults, as
in production) serves N clients that all follow the same shape, either as server-sent
event streams (``sse``) or as long polls (``poll``: answer, then ask again). A writer
thread updates one job row at a time the way a worker writes progress, ``--rate``
commits a second for ``--seconds``. Every client process runs in this process, on
loopback.

Reported per run:

* propagation latency, writer's commit returned -> a client has parsed the row,
  p50 / p99 / max over every (client, commit) pair, and deliveries missed;
* the server's shape queries per change batch and per commit (from its /v1/stats):
  with fan-out these must not grow with N.

The database is a fresh one on ``--database-url``'s server (default: a local server on
127.0.0.1:5432, else the embedded one the tests use), dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from errands.embedded import embedded_postgres
from errands.migrations import migrate
from errands.sync.auth import make_token

ROOT = Path(__file__).resolve().parent.parent
LOCAL_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
EMBEDDED_DIR = ROOT / ".pgdata-test"
SECRET = "sync-bench-secret-0123456789abcdef0123"
USER = "bench"
ROWS = 50
SHAPE = "/v1/shapes/background_jobs"
DRAIN_SECONDS = 15.0
READY_TIMEOUT = 60.0
POLL = 0.05


# -- Postgres and the server -----------------------------------------------------------


def server_url(explicit: str | None) -> str:
    """The Postgres server to create the benchmark's database on."""
    if explicit:
        return explicit
    try:
        with psycopg.connect(LOCAL_SERVER, connect_timeout=2):
            return LOCAL_SERVER
    except psycopg.Error:
        return embedded_postgres(EMBEDDED_DIR)


@contextlib.contextmanager
def fresh_database(admin_url: str) -> Iterator[str]:
    """A migrated database of the benchmark's own, dropped afterwards."""
    name = f"errands_sync_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = make_conninfo(admin_url, dbname=name)
    try:
        migrate(url)
        yield url
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def sync_server(database_url: str) -> Iterator[tuple[str, int]]:
    """``errands server`` on a free loopback port; its base URL and process id."""
    command = ["server", "--database-url", database_url, "--port", "0", "--secret", SECRET]
    process = subprocess.Popen(
        [sys.executable, "-m", "errands", *command],
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    lines: list[str] = []
    ready = threading.Event()

    def read_output() -> None:  # keeps the pipe drained for the server's whole life
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if "listening on" in line:
                ready.set()

    threading.Thread(target=read_output, daemon=True).start()
    try:
        if not ready.wait(READY_TIMEOUT):
            raise SystemExit("errands server did not start:\n" + "".join(lines))
        yield lines[-1].rsplit(" ", 1)[-1].strip(), process.pid
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# -- the writer ----------------------------------------------------------------------


def seed(database_url: str) -> list[str]:
    """The rows the writer updates, owned by the benchmark's user."""
    keys = [str(uuid.uuid4()) for _ in range(ROWS)]
    with psycopg.connect(database_url) as conn:
        conn.cursor().executemany(
            "INSERT INTO background_jobs (id, kind, owner, state, lease_owner)"
            " VALUES (%s, 'bench', %s, 'running', 'bench-writer')",
            [(k, USER) for k in keys],
        )
    return keys


def write(database_url: str, keys: list[str], run: str, commits: int, rate: float) -> list[float]:
    """Worker-style progress updates, one row per transaction, paced at ``rate`` a
    second; the monotonic time each commit returned."""
    committed: list[float] = []
    start = time.monotonic()
    with psycopg.connect(database_url) as conn:
        for seq in range(commits):
            time.sleep(max(0.0, start + seq / rate - time.monotonic()))
            conn.execute(
                "UPDATE background_jobs SET progress = %s, progress_message = %s WHERE id = %s",
                (seq % 100 / 100, f"{run}:{seq}", keys[seq % len(keys)]),
            )
            conn.commit()
            committed.append(time.monotonic())
    return committed


# -- the clients -----------------------------------------------------------------------


@dataclass
class Client:
    """One live client: when it first had each commit of the current run."""

    run: str
    received: dict[int, float] = field(default_factory=dict)
    synced: asyncio.Event = field(default_factory=asyncio.Event)

    def take(self, body: dict[str, Any]) -> str:
        now = time.monotonic()
        prefix = f"{self.run}:"
        for message in body["messages"]:
            if message["type"] == "upsert":
                tag = message["row"]["progress_message"] or ""
                if tag.startswith(prefix):
                    self.received.setdefault(int(tag[len(prefix) :]), now)
            elif message["type"] == "up-to-date":
                self.synced.set()
        return str(body["offset"])


async def connect(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    address = httpx.URL(url)
    return await asyncio.open_connection(address.host, address.port)


def request(url: str, target: str, token: str) -> bytes:
    host = httpx.URL(url).host
    return (
        f"GET {target} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\r\n"
    ).encode()


async def headers(reader: asyncio.StreamReader) -> dict[bytes, bytes]:
    status = await reader.readline()
    if b" 200 " not in status:
        raise RuntimeError(f"the service answered {status!r}")
    found = {}
    while (line := await reader.readline()) not in {b"\r\n", b""}:
        name, _, value = line.partition(b":")
        found[name.strip().lower()] = value.strip()
    return found


# The clients speak HTTP/1.1 over bare connections: lean load generators, so that the
# numbers are the server's and not a client library's (httpx spends ~50x the server's
# CPU on 1000 concurrent long polls).


async def follow_stream(url: str, token: str, client: Client) -> None:
    """One SSE stream, from the snapshot on."""
    reader, writer = await connect(url)
    try:
        writer.write(request(url, f"{SHAPE}/stream?offset=-1", token))
        await headers(reader)  # the body is chunked, one chunk per event
        pending = b""
        while size := int((await reader.readline()).strip() or b"0", 16):
            pending += (await reader.readexactly(size + 2))[:-2]
            *events, pending = pending.split(b"\n\n")
            for event in events:
                if event.startswith(b"data: "):
                    client.take(json.loads(event[6:]))
    finally:
        writer.close()


async def follow_polls(url: str, token: str, client: Client) -> None:
    """Long polls on one keep-alive connection: the snapshot, then live=true."""
    reader, writer = await connect(url)
    offset = "-1"
    try:
        while True:
            live = "&live=true" if client.synced.is_set() else ""
            writer.write(request(url, f"{SHAPE}?offset={quote(offset)}{live}", token))
            length = int((await headers(reader))[b"content-length"])
            offset = client.take(json.loads(await reader.readexactly(length)))
    finally:
        writer.close()


# -- one run ---------------------------------------------------------------------------


@dataclass
class Result:
    """One run's measurements."""

    mode: str
    clients: int
    commits: int
    latencies: list[float]
    missed: int
    batches: int
    queries: int
    server_cpu: float
    client_cpu: float


async def stats(http: httpx.AsyncClient) -> dict[str, Any]:
    answer = await http.get("/v1/stats")
    answer.raise_for_status()
    return dict(answer.json())


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def until(condition: Callable[[], Awaitable[bool]], timeout: float) -> None:
    """Wait until ``condition`` holds, or ``timeout`` seconds (then go on anyway)."""
    for _ in range(int(timeout / POLL)):
        if await condition():
            return
        await asyncio.sleep(POLL)


async def run_case(
    server: tuple[str, int],
    database_url: str,
    keys: list[str],
    mode: str,
    n: int,
    seconds: float,
    rate: float,
) -> Result:
    url, pid = server
    run = uuid.uuid4().hex[:8]
    commits = max(1, int(seconds * rate))
    operator = {"Authorization": f"Bearer {make_token(SECRET, 'ops', operator=True)}"}
    async with httpx.AsyncClient(base_url=url, headers=operator, timeout=60) as ops:
        clients = [Client(run) for _ in range(n)]
        token = make_token(SECRET, USER)
        follow = follow_stream if mode == "sse" else follow_polls
        tasks = [asyncio.create_task(follow(url, token, c)) for c in clients]

        async def all_waiting() -> bool:
            return bool((await stats(ops))["waiting"] >= n)

        async def all_received() -> bool:
            return all(len(c.received) >= commits for c in clients)

        try:
            await asyncio.wait_for(asyncio.gather(*(c.synced.wait() for c in clients)), 120)
            await until(all_waiting, 60)
            # The load generator's own garbage collector must not pause the measurement.
            gc.collect()
            gc.freeze()
            before = await stats(ops)
            cpu_before = (cpu_seconds(pid), time.process_time())
            committed = await asyncio.to_thread(write, database_url, keys, run, commits, rate)
            await until(all_received, DRAIN_SECONDS)
            cpu_after = (cpu_seconds(pid), time.process_time())
            after = await stats(ops)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    latencies = [
        at - committed[seq] for c in clients for seq, at in c.received.items() if seq < commits
    ]
    return Result(
        mode,
        n,
        commits,
        latencies,
        missed=commits * n - len(latencies),
        batches=after["change_batches"] - before["change_batches"],
        queries=after["shape_queries"] - before["shape_queries"],
        server_cpu=cpu_after[0] - cpu_before[0],
        client_cpu=cpu_after[1] - cpu_before[1],
    )


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def report(result: Result) -> None:
    ms = [x * 1000 for x in result.latencies]
    print(
        f"{result.mode:>4} {result.clients:>6} {result.commits:>7}"
        f" {statistics.median(ms) if ms else float('nan'):>8.1f}"
        f" {percentile(ms, 0.99):>8.1f} {max(ms, default=float('nan')):>8.1f}"
        f" {result.missed:>7} {result.batches:>7} {result.queries:>7}"
        f" {result.queries / max(1, result.batches):>9.2f}"
        f" {result.queries / result.commits:>10.2f}"
        f" {result.server_cpu:>8.1f} {result.client_cpu:>8.1f}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", default="1,100,1000", help="comma-separated client counts")
    parser.add_argument("--mode", default="sse,poll", help="sse, poll, or both")
    parser.add_argument("--seconds", type=float, default=8.0, help="how long the writer runs")
    parser.add_argument("--rate", type=float, default=10.0, help="writer commits per second")
    parser.add_argument("--database-url", help="a Postgres server's maintenance database")
    args = parser.parse_args()
    counts = [int(x) for x in args.clients.split(",")]
    modes = args.mode.split(",")
    admin = server_url(args.database_url)
    host = conninfo_to_dict(admin).get("host", "?")
    print(f"errands sync benchmark: Postgres on {host}, {os.cpu_count()} CPUs, loopback HTTP")
    print(f"writer: {args.rate:g} commits/s for {args.seconds:g} s per run, {ROWS} rows\n")
    print(
        f"{'mode':>4} {'clients':>6} {'commits':>7} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}"
        f" {'missed':>7} {'batches':>7} {'queries':>7} {'q/batch':>9} {'q/commit':>10}"
        f" {'srv cpu':>8} {'cli cpu':>8}"
    )
    with fresh_database(admin) as database_url:
        keys = seed(database_url)
        for mode in modes:
            for n in counts:
                # A fresh server per run, so that one run's connections do not linger.
                with sync_server(database_url) as server:
                    result = asyncio.run(
                        run_case(server, database_url, keys, mode, n, args.seconds, args.rate)
                    )
                report(result)


if __name__ == "__main__":
    main()
