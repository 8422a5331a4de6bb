"""The worker benchmark: errands next to Procrastinate and PgQueuer, on one Postgres.

    .venv/bin/python bench/worker_bench.py [--jobs 20000] [--database-url URL]

Workloads (each library gets a fresh database on the same server for each one):

* drain: insert ``--jobs`` no-op jobs, then time one worker from its start until every
  job is finished, at concurrency 1 and 16; the finished jobs are counted in the
  database afterwards;
* pickup latency: with the worker idle and listening, insert ``--latency-jobs`` jobs one
  at a time, ``--gap`` seconds apart, and measure commit -> handler started;
* enqueue: jobs per second, one job per transaction, and batched (the batch API of each
  library, ``--batch-size`` jobs a call; measured while filling the drain queue).

Every worker runs in a fresh child process of this script (``--child``), in-process in
that child through the library's own Python API, so that no library inherits another
one's imports, garbage or event loop. The parent enqueues, verifies and reports.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

LOCAL_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
EMBEDDED_DIR = Path(__file__).resolve().parent.parent / ".pgdata-test"
KIND = "noop"
CHILD_TIMEOUT = 900.0
# Each child reports its result as the last line of its stdout, after this marker.
RESULT_MARKER = "RESULT "

OnJob = Callable[[int], None]


# -- the three contenders ------------------------------------------------------------


class Enqueuer(Protocol):
    """Inserts jobs through a library's own API, each call its own transaction."""

    async def one(self, seq: int) -> None: ...

    async def batch(self, seqs: list[int]) -> None: ...

    async def close(self) -> None: ...


class Contender(Protocol):
    """What the benchmark needs from a job library."""

    name: str
    jobs_sql: str
    finished_sql: str

    async def install(self, url: str) -> None: ...

    async def enqueuer(self, url: str) -> Enqueuer: ...

    async def work(
        self, url: str, concurrency: int, on_job: OnJob, stop: asyncio.Event
    ) -> None: ...


class ErrandsEnqueuer:
    """errands' server-side enqueue on a plain (sync) psycopg connection.

    errands.enqueue is meant to run inside the caller's own transaction; here each job
    is the whole transaction, like the peers' enqueue calls.
    """

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    async def one(self, seq: int) -> None:
        import errands  # noqa: PLC0415 -- each child imports only its own library

        errands.enqueue(self.conn, KIND, {"seq": seq})  # autocommit: its own transaction

    async def batch(self, seqs: list[int]) -> None:
        import errands  # noqa: PLC0415

        with self.conn.transaction():
            errands.enqueue_many(self.conn, KIND, [{"seq": s} for s in seqs])

    async def close(self) -> None:
        self.conn.close()


class ErrandsContender:
    """errands: ``Worker(registry, url, WorkerSettings(concurrency=N)).run()``."""

    name = "errands"
    jobs_sql = "SELECT count(*) FROM background_jobs"
    finished_sql = "SELECT count(*) FROM background_jobs WHERE state = 'completed'"

    async def install(self, url: str) -> None:
        import errands  # noqa: PLC0415

        errands.migrate(url)

    async def enqueuer(self, url: str) -> Enqueuer:
        # Autocommit, as the peers enqueue: one statement, one round trip, one commit.
        return ErrandsEnqueuer(psycopg.connect(url, autocommit=True))

    async def work(self, url: str, concurrency: int, on_job: OnJob, stop: asyncio.Event) -> None:
        import errands  # noqa: PLC0415

        registry = errands.Registry()

        @registry.job(KIND)
        async def noop(ctx: errands.JobContext, payload: dict[str, int]) -> None:
            on_job(payload["seq"])

        worker = errands.Worker(registry, url, errands.WorkerSettings(concurrency=concurrency))
        await _until(worker.run(), stop, worker.stop)


class ProcrastinateEnqueuer:
    """Procrastinate's ``defer_async`` and ``batch_defer_async`` on an open app."""

    def __init__(self, app: Any, task: Any) -> None:
        self.app = app
        self.task = task

    async def one(self, seq: int) -> None:
        await self.task.defer_async(seq=seq)

    async def batch(self, seqs: list[int]) -> None:
        await self.task.batch_defer_async(*({"seq": s} for s in seqs))

    async def close(self) -> None:
        await self.app.close_async()


class ProcrastinateContender:
    """Procrastinate: an async task and ``app.run_worker_async(concurrency=N)``."""

    name = "procrastinate"
    jobs_sql = "SELECT count(*) FROM procrastinate_jobs"
    finished_sql = "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'"

    @staticmethod
    def _app(url: str, on_job: OnJob | None = None) -> tuple[Any, Any]:
        import procrastinate  # noqa: PLC0415

        app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=url))

        @app.task(name=KIND)
        async def noop(seq: int) -> None:
            if on_job is not None:
                on_job(seq)

        return app, noop

    async def install(self, url: str) -> None:
        app, _ = self._app(url)
        async with app.open_async():
            await app.schema_manager.apply_schema_async()

    async def enqueuer(self, url: str) -> Enqueuer:
        app, task = self._app(url)
        await app.open_async()
        return ProcrastinateEnqueuer(app, task)

    async def work(self, url: str, concurrency: int, on_job: OnJob, stop: asyncio.Event) -> None:
        app, _ = self._app(url, on_job)
        async with app.open_async():
            running = asyncio.create_task(
                app.run_worker_async(concurrency=concurrency, install_signal_handlers=False)
            )
            await stop.wait()
            # Cancelling run_worker_async is Procrastinate's graceful stop: running jobs
            # finish and their status is written before it returns.
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running


class PgQueuerEnqueuer:
    """PgQueuer's ``Queries.enqueue``, scalar or with lists, over asyncpg."""

    def __init__(self, conn: Any) -> None:
        from pgqueuer import Queries  # noqa: PLC0415
        from pgqueuer.db import AsyncpgDriver  # noqa: PLC0415

        self.conn = conn
        self.queries = Queries(AsyncpgDriver(conn))

    async def one(self, seq: int) -> None:
        await self.queries.enqueue(KIND, str(seq).encode())

    async def batch(self, seqs: list[int]) -> None:
        await self.queries.enqueue(
            [KIND] * len(seqs), [str(s).encode() for s in seqs], [0] * len(seqs)
        )

    async def close(self) -> None:
        await self.conn.close()


class PgQueuerContender:
    """PgQueuer: an async entrypoint and ``PgQueuer(...).run()`` over asyncpg (its default).

    Concurrency 1 is ``concurrency_limit=1`` with ``batch_size=1`` (PgQueuer's way to
    serialise an entrypoint); concurrency N > 1 is ``max_concurrent_tasks=N`` with
    ``batch_size=N // 2`` (it requires at least twice the batch size).
    """

    name = "pgqueuer"
    jobs_sql = "SELECT count(*) FROM pgqueuer"  # finished jobs leave this table
    finished_sql = "SELECT count(*) FROM pgqueuer_log WHERE status = 'successful'"

    async def install(self, url: str) -> None:
        import asyncpg  # noqa: PLC0415
        from pgqueuer import Queries  # noqa: PLC0415
        from pgqueuer.db import AsyncpgDriver  # noqa: PLC0415

        conn = await asyncpg.connect(**_asyncpg_args(url))
        try:
            await Queries(AsyncpgDriver(conn)).install()
        finally:
            await conn.close()

    async def enqueuer(self, url: str) -> Enqueuer:
        import asyncpg  # noqa: PLC0415

        return PgQueuerEnqueuer(await asyncpg.connect(**_asyncpg_args(url)))

    async def work(self, url: str, concurrency: int, on_job: OnJob, stop: asyncio.Event) -> None:
        import asyncpg  # noqa: PLC0415
        from pgqueuer import PgQueuer  # noqa: PLC0415
        from pgqueuer.models import Job  # noqa: PLC0415

        conn = await asyncpg.connect(**_asyncpg_args(url))
        try:
            pgq = PgQueuer.from_asyncpg_connection(conn)

            @pgq.entrypoint(KIND, concurrency_limit=1 if concurrency == 1 else 0)
            async def noop(job: Job) -> None:
                on_job(int(job.payload or b"0"))

            if concurrency == 1:
                run = pgq.run(batch_size=1)
            else:
                run = pgq.run(batch_size=concurrency // 2, max_concurrent_tasks=concurrency)
            await _until(run, stop, pgq.shutdown.set)
        finally:
            await conn.close()


def _asyncpg_args(url: str) -> dict[str, Any]:
    """asyncpg takes only URLs as DSN; hand it the parts of any libpq conninfo instead."""
    parts = conninfo_to_dict(url)
    names = {"host": "host", "port": "port", "user": "user", "password": "password"}
    args = {ours: parts[theirs] for theirs, ours in names.items() if parts.get(theirs)}
    args["database"] = parts.get("dbname")
    return args


CONTENDERS: dict[str, Contender] = {
    c.name: c for c in (ErrandsContender(), ProcrastinateContender(), PgQueuerContender())
}


async def _until(
    run: Awaitable[None], stop: asyncio.Event, request_stop: Callable[[], Any]
) -> None:
    """Run a worker until ``stop`` is set, then ask it to stop and wait for it."""

    async def stopper() -> None:
        await stop.wait()
        request_stop()

    watcher = asyncio.create_task(stopper())
    try:
        await run
    finally:
        watcher.cancel()


# -- the child: one worker in a fresh process ------------------------------------------


async def child(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one worker as ``spec`` says; return what it measured."""
    contender = CONTENDERS[spec["library"]]
    expected: int | None = spec.get("expected")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    started: dict[int, float] = {}
    handled = 0

    def on_job(seq: int) -> None:
        nonlocal handled
        started[seq] = time.monotonic()  # CLOCK_MONOTONIC: one clock for every process
        handled += 1
        if expected is not None and handled >= expected:
            stop.set()

    print("READY", flush=True)
    begin = time.perf_counter()
    await contender.work(spec["url"], spec["concurrency"], on_job, stop)
    elapsed = time.perf_counter() - begin
    return {"elapsed": elapsed, "handled": handled, "started": started}


def child_main(raw: str) -> None:
    """Entry point of ``--child``: the result as JSON on the last line of stdout."""
    result = asyncio.run(child(json.loads(raw)))
    print(RESULT_MARKER + json.dumps(result), flush=True)


@contextlib.contextmanager
def spawn_child(spec: dict[str, Any]) -> Iterator[subprocess.Popen[str]]:
    """Start a child worker process; kill it on the way out whatever happens."""
    process = subprocess.Popen(
        [sys.executable, __file__, "--child", json.dumps(spec)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        if process.stdout.readline().strip() != "READY":
            raise RuntimeError(f"{spec['library']} worker did not start")
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def child_result(process: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    """Wait for a child to end and parse its result line."""
    out, _ = process.communicate(timeout=timeout)
    for line in reversed(out.splitlines()):
        if line.startswith(RESULT_MARKER):
            result: dict[str, Any] = json.loads(line[len(RESULT_MARKER) :])
            return result
    raise RuntimeError(f"the worker exited with {process.returncode} and no result")


# -- the parent: databases, workloads, report ---------------------------------------------


def server_url(explicit: str | None) -> str:
    """``--database-url``, else the environment, else a local server, else embedded."""
    url = explicit or os.environ.get("ERRANDS_BENCH_DATABASE_URL")
    if url:
        return url
    try:
        with psycopg.connect(LOCAL_SERVER, connect_timeout=2):
            return LOCAL_SERVER
    except psycopg.Error:
        from errands.embedded import embedded_postgres  # noqa: PLC0415

        return embedded_postgres(EMBEDDED_DIR)


@dataclass
class Database:
    """A fresh database on the benchmark's server, dropped when done."""

    server: str
    name: str

    @property
    def url(self) -> str:
        """The database's URL."""
        return make_conninfo(self.server, dbname=self.name)

    def scalar(self, sql: str) -> Any:
        """One value from one query."""
        with psycopg.connect(self.url, autocommit=True, connect_timeout=10) as conn:
            row = conn.execute(sql.encode()).fetchone()
            return row[0] if row else None

    def checkpoint(self) -> None:
        """Flush dirty pages now, so no checkpoint lands inside a timed run."""
        with contextlib.suppress(psycopg.Error):
            self.scalar("CHECKPOINT")


@contextlib.contextmanager
def fresh_database(server: str, library: str) -> Iterator[Database]:
    """Create ``errands_bench_<library>_<random>``; drop it (forcefully) afterwards."""
    db = Database(server, f"errands_bench_{library}_{uuid.uuid4().hex[:8]}")
    options = "-c statement_timeout=120000"
    with psycopg.connect(server, autocommit=True, connect_timeout=10, options=options) as admin:
        admin.execute(f'CREATE DATABASE "{db.name}"'.encode())
    try:
        yield db
    finally:
        with psycopg.connect(server, autocommit=True, connect_timeout=10) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{db.name}" WITH (FORCE)'.encode())


async def wait_for_count(db: Database, sql: str, count: int, deadline: float) -> int:
    """Poll until ``sql`` returns at least ``count``; return the last value."""
    end = time.monotonic() + deadline
    value = 0
    while time.monotonic() < end:
        value = db.scalar(sql)
        if value >= count:
            return int(value)
        await asyncio.sleep(0.05)
    return int(value)


@dataclass
class DrainResult:
    """One drain run: the insert before it, then the drain itself."""

    enqueue_rate: float
    drain_rate: float


async def drain(
    contender: Contender, server: str, jobs: int, batch: int, concurrency: int
) -> DrainResult:
    """Fill a fresh queue with the batch API (timed), then drain it with one worker."""
    with fresh_database(server, contender.name) as db:
        await contender.install(db.url)
        enqueuer = await contender.enqueuer(db.url)
        begin = time.perf_counter()
        for first in range(0, jobs, batch):
            await enqueuer.batch(list(range(first, min(first + batch, jobs))))
        enqueue_rate = jobs / (time.perf_counter() - begin)
        await enqueuer.close()
        db.checkpoint()
        spec = {
            "library": contender.name,
            "url": db.url,
            "concurrency": concurrency,
            "expected": jobs,
        }
        with spawn_child(spec) as process:
            result = child_result(process, CHILD_TIMEOUT)
        finished = db.scalar(contender.finished_sql)
        if finished != jobs or result["handled"] != jobs:
            raise RuntimeError(
                f"{contender.name}: {finished} jobs finished in the database and "
                f"{result['handled']} handled, expected {jobs}"
            )
        return DrainResult(enqueue_rate, jobs / result["elapsed"])


async def enqueue_single(contender: Contender, server: str, jobs: int) -> float:
    """Jobs per second, one job per transaction."""
    with fresh_database(server, contender.name) as db:
        await contender.install(db.url)
        enqueuer = await contender.enqueuer(db.url)
        begin = time.perf_counter()
        for seq in range(jobs):
            await enqueuer.one(seq)
        rate = jobs / (time.perf_counter() - begin)
        await enqueuer.close()
        if (queued := db.scalar(contender.jobs_sql)) != jobs:
            raise RuntimeError(f"{contender.name}: {queued} jobs in the database, expected {jobs}")
        return rate


async def pickup_latency(
    contender: Contender, server: str, jobs: int, gap: float, concurrency: int
) -> list[float]:
    """Seconds from commit to handler start for ``jobs`` jobs inserted one at a time."""
    with fresh_database(server, contender.name) as db:
        await contender.install(db.url)
        enqueuer = await contender.enqueuer(db.url)
        spec = {"library": contender.name, "url": db.url, "concurrency": concurrency}
        try:
            with spawn_child(spec) as process:
                # A warm-up job: once it is done the worker is connected and listening.
                await enqueuer.one(-1)
                if await wait_for_count(db, contender.finished_sql, 1, 60) < 1:
                    raise RuntimeError(f"{contender.name}: the warm-up job never ran")
                committed: dict[int, float] = {}
                for seq in range(jobs):
                    await enqueuer.one(seq)
                    committed[seq] = time.monotonic()
                    await asyncio.sleep(gap)
                done = await wait_for_count(db, contender.finished_sql, jobs + 1, 60)
                process.send_signal(signal.SIGTERM)
                result = child_result(process, 60)
        finally:
            await enqueuer.close()
        if done != jobs + 1:
            raise RuntimeError(f"{contender.name}: {done} of {jobs + 1} jobs finished")
        started = {int(k): v for k, v in result["started"].items()}
        return [started[seq] - committed[seq] for seq in range(jobs)]


def percentile(values: list[float], fraction: float) -> float:
    """The ``fraction`` quantile (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


@dataclass(frozen=True)
class Row:
    """One line of the report: a figure per library and which way is better."""

    label: str
    unit: str
    higher_is_better: bool


def report(rows: list[Row], figures: dict[str, dict[str, float]], names: list[str]) -> str:
    """The table, with errands/peer ratios (for latency, below 1 means errands is faster)."""
    peers = [n for n in names if n != "errands"]
    header = ["workload", *names, *(f"errands/{p}" for p in peers), "better"]
    lines = [header]
    for row in rows:
        values = figures[row.label]
        cells = [f"{row.label} ({row.unit})"]
        cells += [_fmt(values.get(n)) for n in names]
        for peer in peers:
            ours, theirs = values.get("errands"), values.get(peer)
            cells.append(f"{ours / theirs:.2f}" if ours and theirs else "-")
        cells.append("higher" if row.higher_is_better else "lower")
        lines.append(cells)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in lines
    ]
    text.insert(1, "-" * len(text[0]))
    return "\n".join(text)


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if value >= 100 else f"{value:.2f}"


async def run_all(args: argparse.Namespace) -> None:
    """Every workload for every library, then the table."""
    server = server_url(args.database_url)
    names = args.libraries
    figures: dict[str, dict[str, float]] = {}
    rows: list[Row] = []

    def record(label: str, unit: str, higher: bool, name: str, value: float) -> None:
        if label not in figures:
            figures[label] = {}
            rows.append(Row(label, unit, higher))
        figures[label][name] = value
        print(f"  {name:<14} {label}: {_fmt(value)} {unit}", flush=True)

    print(f"server: {conninfo_to_dict(server).get('host', 'local socket')}, jobs: {args.jobs}")
    contenders = [CONTENDERS[name] for name in names]
    # Workload by workload, every library in turn: noise from a shared machine then
    # spreads over all of them instead of landing on whichever ran at the time.
    batched: dict[str, float] = {}
    for concurrency in (1, 16):
        for c in contenders:
            result = await drain(c, server, args.jobs, args.batch_size, concurrency)
            batched[c.name] = max(batched.get(c.name, 0.0), result.enqueue_rate)
            record(f"drain c={concurrency}", "jobs/s", True, c.name, result.drain_rate)
    for c in contenders:
        latencies = await pickup_latency(c, server, args.latency_jobs, args.gap, 16)
        for q in (0.5, 0.95, 0.99):
            record(
                f"pickup p{round(q * 100)}", "ms", False, c.name, percentile(latencies, q) * 1000
            )
    for c in contenders:
        rate = await enqueue_single(c, server, args.single_jobs)
        record("enqueue 1/tx", "jobs/s", True, c.name, rate)
    for c in contenders:
        record(f"enqueue batch {args.batch_size}", "jobs/s", True, c.name, batched[c.name])
    print()
    print(report(rows, figures, names))


def main() -> None:
    """Parse the command line and run the benchmark (or one child worker)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", help="a Postgres server's maintenance database")
    parser.add_argument("--jobs", type=int, default=20_000, help="jobs per drain run")
    parser.add_argument("--batch-size", type=int, default=1_000, help="jobs per batched enqueue")
    parser.add_argument(
        "--single-jobs", type=int, default=2_000, help="jobs enqueued one per transaction"
    )
    parser.add_argument("--latency-jobs", type=int, default=200, help="jobs for the pickup latency")
    parser.add_argument("--gap", type=float, default=0.025, help="seconds between latency jobs")
    parser.add_argument(
        "--libraries",
        nargs="+",
        default=list(CONTENDERS),
        choices=list(CONTENDERS),
        help="what to run",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    # Procrastinate warns that the app lives in __main__ (it matters only for finding
    # tasks by import path, which the benchmark doesn't do).
    logging.getLogger("procrastinate").setLevel(logging.ERROR)
    if args.child:
        child_main(args.child)
    else:
        asyncio.run(run_all(args))


if __name__ == "__main__":
    main()
