"""The sync benchmark: N live clients of U users on one ``errands server``, a writer
updating rows.

    .venv/bin/python bench/sync_bench.py [--clients 1,100,1000] [--users 1,all]
                                         [--mode sse,poll] [--processes P]
                                         [--seconds 8] [--rate 10] [--database-url URL]

For each mode, number of clients and number of users: one ``errands server`` process
(defaults, as in production) serves N clients spread evenly over U users (``all``: as
many users as clients, so every client is its own shape). Each user owns a few job
rows. A writer thread updates one row of a randomly drawn user per transaction, the
way a worker writes progress, ``--rate`` commits a second for ``--seconds``; only that
user's clients receive the change. The clients follow their user's shape either as
server-sent event streams (``sse``) or as long polls (``poll``: answer, then ask
again); they run in ``--processes`` load-generator processes (default: one per 2,500
clients), on loopback.

Reported per run:

* propagation latency, writer's commit returned -> a client has parsed the row,
  p50 / p99 / max over every (client, commit of its user) pair, and deliveries missed;
* the server's Postgres queries per commit (change-log reads plus per-shape reads,
  from its /v1/stats): with fan-out these must not grow with N or U;
* the server's CPU time per commit (Linux /proc), and the load generators' CPU.

The database is a fresh one on ``--database-url``'s server (default: a local server on
127.0.0.1:5432, else the embedded one the tests use), dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import multiprocessing
import os
import random
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
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
ROWS_ONE_USER = 50
ROWS_PER_USER = 2
PROCESS_CLIENTS = 2500
CONNECT_WAVE = 100
CONNECT_ATTEMPTS = 20
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


def _python_path() -> str:
    """The checkout's src first, then whatever this process was given (errands' wheel
    installed with ``--target`` on a machine without a checkout)."""
    given = os.environ.get("PYTHONPATH")
    return os.pathsep.join([str(ROOT / "src"), *([given] if given else [])])


@contextlib.contextmanager
def sync_server(database_url: str) -> Iterator[tuple[str, int]]:
    """``errands server`` on a free loopback port; its base URL and process id."""
    # This measures fan-out, not fair share: one user's thousands of clients are let in
    # (bench/hostile_bench.py measures the per-user limits).
    limits = ["--max-live-readers", "1000000", "--max-shapes", "1000000"]
    command = ["server", "--database-url", database_url, "--port", "0", *limits]
    process = subprocess.Popen(
        [sys.executable, "-m", "errands", *command],
        env={**os.environ, "PYTHONPATH": _python_path(), "ERRANDS_SECRET": SECRET},
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


def user_name(u: int) -> str:
    return f"user{u}"


def seed(database_url: str, users: int) -> dict[int, list[str]]:
    """The rows the writer updates, a few per user; the keys by user."""
    per_user = ROWS_ONE_USER if users == 1 else ROWS_PER_USER
    keys = {u: [str(uuid.uuid4()) for _ in range(per_user)] for u in range(users)}
    with (
        psycopg.connect(database_url) as conn,
        conn.cursor().copy(
            "COPY background_jobs (id, kind, owner, state, lease_owner) FROM STDIN"
        ) as copy,
    ):
        for u, rows in keys.items():
            for key in rows:
                copy.write_row((key, "bench", user_name(u), "running", "bench-writer"))
    return keys


def schedule(commits: int, users: int, seed_value: int) -> list[int]:
    """Which user each commit touches: drawn at random, up front, so the clients know
    what they should receive."""
    rng = random.Random(seed_value)
    return [rng.randrange(users) for _ in range(commits)]


def write(
    database_url: str, keys: dict[int, list[str]], run: str, plan: list[int], rate: float
) -> list[float]:
    """Worker-style progress updates, one row per transaction, paced at ``rate`` a
    second; the monotonic time each commit returned."""
    committed: list[float] = []
    start = time.monotonic()
    with psycopg.connect(database_url) as conn:
        for seq, user in enumerate(plan):
            time.sleep(max(0.0, start + seq / rate - time.monotonic()))
            rows = keys[user]
            conn.execute(
                "UPDATE background_jobs SET progress = %s, progress_message = %s WHERE id = %s",
                (seq % 100 / 100, f"{run}:{seq}", rows[seq % len(rows)]),
            )
            conn.commit()
            committed.append(time.monotonic())
    return committed


# -- the clients -----------------------------------------------------------------------


@dataclass
class Client:
    """One live client: when it first had each commit of the current run."""

    run: str
    expected: int
    received: dict[int, float] = field(default_factory=dict)
    synced: asyncio.Event = field(default_factory=asyncio.Event)
    complete: asyncio.Event = field(default_factory=asyncio.Event)

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
        if len(self.received) >= self.expected:
            self.complete.set()
        return str(body["offset"])


async def connect(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    address = httpx.URL(url)
    for attempt in range(20):  # thousands connecting at once overflow the backlog
        try:
            return await asyncio.open_connection(address.host, address.port)
        except OSError:
            await asyncio.sleep(0.05 * 2 ** min(attempt, 5))
    return await asyncio.open_connection(address.host, address.port)


def request(url: str, target: str, token: str) -> bytes:
    host = httpx.URL(url).host
    return (
        f"GET {target} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\r\n"
    ).encode()


async def get(
    url: str, target: str, token: str, connection: tuple[asyncio.StreamReader, asyncio.StreamWriter]
) -> dict[bytes, bytes]:
    """Send a request and read the answer's headers; retry, as clients do, while the
    service answers 503 (thousands of clients asking for snapshots at once queue up for
    its database connections)."""
    reader, writer = connection
    while True:
        writer.write(request(url, target, token))
        status = await reader.readline()
        found = {}
        while (line := await reader.readline()) not in {b"\r\n", b""}:
            name, _, value = line.partition(b":")
            found[name.strip().lower()] = value.strip()
        if b" 200 " in status:
            return found
        if b" 503 " not in status:
            raise RuntimeError(f"the service answered {status!r}")
        await reader.readexactly(int(found[b"content-length"]))
        await asyncio.sleep(random.uniform(1.0, 3.0))


# The clients speak HTTP/1.1 over bare connections: lean load generators, so that the
# numbers are the server's and not a client library's (httpx spends ~50x the server's
# CPU on 1000 concurrent long polls).


async def follow_stream(url: str, token: str, client: Client) -> None:
    """One SSE stream, from the snapshot on."""
    reader, writer = await connect(url)
    try:
        await get(url, f"{SHAPE}/stream?offset=-1", token, (reader, writer))
        # The body is chunked, one chunk per event.
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
            target = f"{SHAPE}?offset={quote(offset)}{live}"
            length = int((await get(url, target, token, (reader, writer)))[b"content-length"])
            offset = client.take(json.loads(await reader.readexactly(length)))
    finally:
        writer.close()


async def follow_until_synced(follow: Any, url: str, token: str, client: Client) -> None:
    """Follow, reconnecting like a real client while the snapshot has not arrived (a
    cold start of thousands overflows the listen backlog: connections are reset)."""
    for _ in range(CONNECT_ATTEMPTS):
        try:
            await follow(url, token, client)
            return  # the service ended the stream
        except (OSError, asyncio.IncompleteReadError):
            if client.synced.is_set():
                raise
            await asyncio.sleep(random.uniform(0.5, 2.0))
    raise RuntimeError(f"no snapshot after {CONNECT_ATTEMPTS} connections")


# -- a load-generator process ----------------------------------------------------------


@dataclass(frozen=True)
class Assignment:
    """What one load-generator process runs: its clients' users, and the plan."""

    url: str
    mode: str
    run: str
    users: list[int]  # one per client
    tokens: dict[int, str]
    plan: list[int]


def load_generator(assignment: Assignment, pipe: Connection) -> None:
    """A child process: run the clients; say "synced" once they all are, then wait for
    "stop" (or for all to have every commit of their user) and send the receipts."""
    asyncio.run(_generate(assignment, pipe))


async def _generate(a: Assignment, pipe: Connection) -> None:
    counts: dict[int, int] = {}
    for user in a.plan:
        counts[user] = counts.get(user, 0) + 1
    clients = [Client(a.run, counts.get(u, 0)) for u in a.users]
    follow = follow_stream if a.mode == "sse" else follow_polls
    tasks: list[asyncio.Task[None]] = []
    failures: list[BaseException] = []

    def failed(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            failures.append(task.exception())  # type: ignore[arg-type]

    for start in range(0, len(clients), CONNECT_WAVE):
        for i in range(start, min(start + CONNECT_WAVE, len(clients))):
            following = follow_until_synced(follow, a.url, a.tokens[a.users[i]], clients[i])
            task = asyncio.create_task(following)
            task.add_done_callback(failed)
            tasks.append(task)
        await asyncio.sleep(0.1)
    try:
        synced = asyncio.gather(*(c.synced.wait() for c in clients))
        while not synced.done():
            await asyncio.wait([synced], timeout=1)
            if failures:
                synced.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await synced
                pipe.send(f"{len(failures)} clients failed, e.g. {failures[0]!r}")
                return
        gc.collect()
        gc.freeze()  # the load generator's own collector must not pause the measurement
        cpu = time.process_time()
        pipe.send("synced")
        everyone = asyncio.gather(*(c.complete.wait() for c in clients))
        stop = asyncio.create_task(asyncio.to_thread(pipe.recv))
        await asyncio.wait([everyone, stop], return_when=asyncio.FIRST_COMPLETED)
        if everyone.done():
            pipe.send("complete")
        else:
            everyone.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await everyone
        await stop
        cpu = time.process_time() - cpu
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    pipe.send(([c.received for c in clients], cpu))


# -- one run ---------------------------------------------------------------------------


@dataclass
class Result:
    """One run's measurements."""

    mode: str
    clients: int
    users: int
    commits: int
    latencies: list[float]
    missed: int
    batches: int
    queries: int
    server_cpu: float
    client_cpu: float


def stats(http: httpx.Client) -> dict[str, Any]:
    answer = http.get("/v1/stats")
    answer.raise_for_status()
    return dict(answer.json())


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def until(condition: Any, timeout: float) -> None:
    """Wait until ``condition()`` holds, or ``timeout`` seconds (then go on anyway)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not condition():
        time.sleep(POLL)


@dataclass(frozen=True)
class Case:
    """One run's parameters."""

    mode: str
    clients: int
    users: int
    processes: int
    seconds: float
    rate: float


def run_case(
    server: tuple[str, int], database_url: str, keys: dict[int, list[str]], case: Case
) -> Result:
    url, pid = server
    run = uuid.uuid4().hex[:8]
    commits = max(1, int(case.seconds * case.rate))
    plan = schedule(commits, case.users, hash(run))
    users = [i % case.users for i in range(case.clients)]
    tokens = {u: make_token(SECRET, user_name(u)) for u in range(case.users)}
    operator = {"Authorization": f"Bearer {make_token(SECRET, 'ops', operator=True)}"}
    spawn = multiprocessing.get_context("spawn")
    pipes: list[Connection] = []
    children = []
    for p in range(case.processes):
        mine = users[p :: case.processes]
        ours, theirs = spawn.Pipe()
        assignment = Assignment(url, case.mode, run, mine, {u: tokens[u] for u in set(mine)}, plan)
        child = spawn.Process(target=load_generator, args=(assignment, theirs), daemon=True)
        child.start()
        pipes.append(ours)
        children.append(child)
    try:
        with httpx.Client(base_url=url, headers=operator, timeout=60) as ops:
            for pipe in pipes:
                said = pipe.recv() if pipe.poll(900) else "no answer in 900 s"
                if said != "synced":
                    raise SystemExit(f"the clients did not get their snapshots: {said}")
            until(lambda: stats(ops)["waiting"] >= case.clients, 60)
            before = stats(ops)
            cpu_before = cpu_seconds(pid)
            committed = write(database_url, keys, run, plan, case.rate)
            until(lambda: all(p.poll() for p in pipes), DRAIN_SECONDS)
            cpu_after = cpu_seconds(pid)
            after = stats(ops)
        for pipe in pipes:
            pipe.send("stop")
        receipts = []
        client_cpu = 0.0
        for pipe in pipes:
            answer = pipe.recv()
            while answer == "complete":
                answer = pipe.recv()
            received, cpu = answer
            receipts += received
            client_cpu += cpu
    finally:
        for child in children:
            child.join(30)
            if child.is_alive():
                child.kill()
    order = [u for p in range(case.processes) for u in users[p :: case.processes]]
    latencies = [
        got[seq] - committed[seq]
        for user, got in zip(order, receipts, strict=True)
        for seq, touched in enumerate(plan)
        if touched == user and seq in got
    ]
    expected = sum(1 for user in order for touched in plan if touched == user)
    queries = after["change_queries"] + after["shape_queries"]
    queries -= before["change_queries"] + before["shape_queries"]
    return Result(
        case.mode,
        case.clients,
        case.users,
        commits,
        latencies,
        missed=expected - len(latencies),
        batches=after["change_batches"] - before["change_batches"],
        queries=queries,
        server_cpu=cpu_after - cpu_before,
        client_cpu=client_cpu,
    )


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


COLUMNS = (
    f"{'mode':>4} {'clients':>7} {'users':>6} {'commits':>7} {'p50 ms':>8} {'p99 ms':>8}"
    f" {'max ms':>8} {'missed':>7} {'batches':>7} {'q/commit':>8} {'cpu ms/commit':>13}"
    f" {'load cpu s':>10}"
)


def report(result: Result) -> None:
    ms = [x * 1000 for x in result.latencies]
    print(
        f"{result.mode:>4} {result.clients:>7} {result.users:>6} {result.commits:>7}"
        f" {statistics.median(ms) if ms else float('nan'):>8.1f}"
        f" {percentile(ms, 0.99):>8.1f} {max(ms, default=float('nan')):>8.1f}"
        f" {result.missed:>7} {result.batches:>7}"
        f" {result.queries / result.commits:>8.2f}"
        f" {result.server_cpu / result.commits * 1000:>13.1f} {result.client_cpu:>10.1f}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", default="1,100,1000", help="comma-separated client counts")
    parser.add_argument(
        "--users", default="1", help="comma-separated user counts; 'all': one per client"
    )
    parser.add_argument("--mode", default="sse,poll", help="sse, poll, or both")
    parser.add_argument(
        "--processes", type=int, help=f"load generators (default: one per {PROCESS_CLIENTS})"
    )
    parser.add_argument("--seconds", type=float, default=8.0, help="how long the writer runs")
    parser.add_argument("--rate", type=float, default=10.0, help="writer commits per second")
    parser.add_argument("--database-url", help="a Postgres server's maintenance database")
    args = parser.parse_args()
    admin = server_url(args.database_url)
    host = conninfo_to_dict(admin).get("host", "?")
    print(f"errands sync benchmark: Postgres on {host}, {os.cpu_count()} CPUs, loopback HTTP")
    print(f"writer: {args.rate:g} commits/s for {args.seconds:g} s per run\n")
    print(COLUMNS)
    for mode in args.mode.split(","):
        for n in (int(x) for x in args.clients.split(",")):
            for u in args.users.split(","):
                users = n if u == "all" else min(int(u), n)
                processes = args.processes or max(1, -(-n // PROCESS_CLIENTS))
                case = Case(mode, n, users, processes, args.seconds, args.rate)
                # A fresh database and server per run: one run's rows and connections
                # do not linger into the next.
                with fresh_database(admin) as database_url:
                    keys = seed(database_url, users)
                    with sync_server(database_url) as server:
                        report(run_case(server, database_url, keys, case))


if __name__ == "__main__":
    main()
