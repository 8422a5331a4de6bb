"""The worker benchmark: errands next to Procrastinate and PgQueuer, on one Postgres.

    .venv/bin/python bench/worker_bench.py [--runs 3] [--jobs 20000] [--quick]

Every workload runs ``--runs`` times for every library, interleaved (round after round,
each round in a rotated library order, so that a noisy minute on a shared machine does
not land on one library); the report gives the median and the spread (lowest-highest).

Workloads (each run gets a fresh database on the same server):

* drain c=1 / c=16: ``--jobs`` no-op jobs are inserted first, then one worker with that
  concurrency drains them. The drain is timed from the first handler call to the last
  one (the worker's start-up, from its start to the first handler call, is reported on
  its own row); the finished jobs are then counted in the database;
* drain c=16 with history: the same, with ``--history`` (1,000,000) finished jobs and
  their events already in the table (errands only: it keeps its audit log, so this is
  its real life; the peers delete or keep less);
* drain c=16 behind a backlog: ``--backlog`` (100,000) queued jobs of another kind (for
  Procrastinate: another queue) wait ahead of the ``--jobs`` the worker handles;
* drain c=16 via ``errands worker``: the real command as users start it, timed in the
  database (first ``started_at`` to last ``finished_at``);
* pickup latency: an idle, listening worker; jobs inserted one at a time, ``--gap``
  apart; commit -> handler start;
* enqueue: one job per transaction, and batched (``--batch-size`` a call), each
  library through its async API.

Every worker runs in a fresh child process of this script (``--child``), in-process in
that child through the library's own Python API, so that no library inherits another
one's imports, garbage or event loop. The parent enqueues, verifies and reports.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import logging
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

LOCAL_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
BENCH_DIR = Path(__file__).resolve().parent
EMBEDDED_DIR = BENCH_DIR.parent / ".pgdata-test"
KIND = "noop"
OTHER = "other"
CHILD_TIMEOUT = 1800.0
# Each child reports its result as the last line of its stdout, after this marker.
RESULT_MARKER = "RESULT "

OnJob = Callable[[int], None]


# -- the three contenders ------------------------------------------------------------


class Enqueuer(Protocol):
    """Inserts jobs through a library's own async API, each call its own transaction."""

    async def one(self, seq: int) -> None: ...

    async def batch(self, seqs: list[int], kind: str = KIND) -> None: ...

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
    """errands' async enqueue (``enqueue_async``, ``enqueue_many_async``) on an asyncio
    psycopg connection, next to the peers' async drivers.

    errands.enqueue is meant to run inside the caller's own transaction; here each call
    is the whole transaction, like the peers' enqueue calls.
    """

    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self.conn = conn

    async def one(self, seq: int) -> None:
        import errands  # noqa: PLC0415 -- each child imports only its own library

        await errands.enqueue_async(self.conn, KIND, {"seq": seq})  # autocommit

    async def batch(self, seqs: list[int], kind: str = KIND) -> None:
        import errands  # noqa: PLC0415

        # One statement on an autocommit connection is its own transaction, as the
        # peers' batch calls are (a transaction block would add BEGIN and COMMIT).
        await errands.enqueue_many_async(self.conn, kind, [{"seq": s} for s in seqs])

    async def close(self) -> None:
        await self.conn.close()


class ErrandsContender:
    """errands: ``Worker(registry, url, WorkerSettings(concurrency=N)).run()``."""

    name = "errands"
    jobs_sql = "SELECT count(*) FROM background_jobs"
    finished_sql = (
        f"SELECT count(*) FROM background_jobs WHERE state = 'completed' AND kind = '{KIND}'"
    )

    async def install(self, url: str) -> None:
        import errands  # noqa: PLC0415

        errands.migrate(url)

    async def enqueuer(self, url: str) -> Enqueuer:
        # Autocommit, as the peers enqueue: one statement, one round trip, one commit.
        return ErrandsEnqueuer(await psycopg.AsyncConnection.connect(url, autocommit=True))

    async def work(self, url: str, concurrency: int, on_job: OnJob, stop: asyncio.Event) -> None:
        import errands  # noqa: PLC0415

        registry = errands.Registry()

        @registry.job(KIND)
        async def noop(ctx: errands.JobContext, payload: dict[str, int]) -> None:
            on_job(payload["seq"])

        # The lanes workload sets this in the child's environment (an A/B of the setting).
        lanes = int(os.environ.get("ERRANDS_BENCH_CLAIM_LANES", "1"))
        settings = errands.WorkerSettings(concurrency=concurrency, claim_lanes=lanes)
        worker = errands.Worker(registry, url, settings)
        await _until(worker.run(), stop, worker.stop)


class ProcrastinateEnqueuer:
    """Procrastinate's ``defer_async`` and ``batch_defer_async`` on an open app; the
    other kind is the same task in another queue (its workers take whatever task the
    queues they listen to hold)."""

    def __init__(self, app: Any, task: Any) -> None:
        self.app = app
        self.task = task

    async def one(self, seq: int) -> None:
        await self.task.defer_async(seq=seq)

    async def batch(self, seqs: list[int], kind: str = KIND) -> None:
        deferrer = self.task if kind == KIND else self.task.configure(queue=OTHER)
        await deferrer.batch_defer_async(*({"seq": s} for s in seqs))

    async def close(self) -> None:
        await self.app.close_async()


class ProcrastinateContender:
    """Procrastinate: an async task and ``app.run_worker_async(concurrency=N)`` on the
    task's queue."""

    name = "procrastinate"
    jobs_sql = "SELECT count(*) FROM procrastinate_jobs"
    finished_sql = "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'"

    @staticmethod
    def _app(url: str, on_job: OnJob | None = None) -> tuple[Any, Any]:
        import procrastinate  # noqa: PLC0415

        app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=url))

        @app.task(name=KIND, queue="default")
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
                app.run_worker_async(
                    concurrency=concurrency, queues=["default"], install_signal_handlers=False
                )
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

    async def batch(self, seqs: list[int], kind: str = KIND) -> None:
        await self.queries.enqueue(
            [kind] * len(seqs), [str(s).encode() for s in seqs], [0] * len(seqs)
        )

    async def close(self) -> None:
        await self.conn.close()


class PgQueuerContender:
    """PgQueuer: an async entrypoint and ``PgQueuer(...).run()`` over asyncpg (its default).

    Its only local cap is ``max_concurrent_tasks``, which must be at least twice the
    batch size: concurrency N is ``max_concurrent_tasks=N, batch_size=N // 2``, and
    concurrency 1 is the smallest local cap there is, ``max_concurrent_tasks=2,
    batch_size=1``, with an asyncio lock in the handler so that one runs at a time
    (``concurrency_limit=1`` would be a seat shared by every worker, enforced in SQL).
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
        one_at_a_time = asyncio.Lock() if concurrency == 1 else contextlib.nullcontext()
        try:
            pgq = PgQueuer.from_asyncpg_connection(conn)

            @pgq.entrypoint(KIND)
            async def noop(job: Job) -> None:
                async with one_at_a_time:
                    on_job(int(job.payload or b"0"))

            batch = max(1, concurrency // 2)
            run = pgq.run(batch_size=batch, max_concurrent_tasks=max(2, concurrency))
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
    """Run one worker as ``spec`` says; return what it measured (monotonic seconds)."""
    contender = CONTENDERS[spec["library"]]
    expected: int | None = spec.get("expected")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    started: dict[int, float] = {}

    def on_job(seq: int) -> None:
        started[seq] = time.monotonic()  # CLOCK_MONOTONIC: one clock for every process
        if expected is not None and len(started) >= expected:
            stop.set()

    print("READY", flush=True)
    begin = time.monotonic()
    await contender.work(spec["url"], spec["concurrency"], on_job, stop)
    calls = sorted(started.values())
    return {
        "begin": begin,
        "first": calls[0] if calls else None,
        "last": calls[-1] if calls else None,
        "handled": len(started),
        "started": started if spec.get("keep_starts") else {},
    }


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
    """A database on the benchmark's server."""

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


def _admin(server: str, sql: str) -> None:
    options = "-c statement_timeout=600000"
    with psycopg.connect(server, autocommit=True, connect_timeout=10, options=options) as admin:
        admin.execute(sql.encode())


@contextlib.contextmanager
def fresh_database(server: str, library: str, template: str | None = None) -> Iterator[Database]:
    """Create ``errands_bench_<library>_<random>`` (a copy of ``template`` if given);
    drop it (forcefully) afterwards."""
    db = Database(server, f"errands_bench_{library}_{uuid.uuid4().hex[:8]}")
    # FILE_COPY: a large template is copied file by file, not written again through WAL.
    copy = f' TEMPLATE "{template}" STRATEGY FILE_COPY' if template else ""
    _admin(server, f'CREATE DATABASE "{db.name}"{copy}')
    try:
        yield db
    finally:
        _admin(server, f'DROP DATABASE IF EXISTS "{db.name}" WITH (FORCE)')


# errands' history: finished jobs of another kind, each with the three events a
# completed job leaves, as a worker would have written them (triggers off to fill fast).
HISTORY_SQL = """
SET session_replication_role = replica;
INSERT INTO background_jobs
    (id, "timestamp", kind, payload, state, completed, progress, result, attempts,
     max_attempts, priority, queue, lease_owner, received_at, started_at, finished_at)
SELECT gen_random_uuid(), t, 'history', jsonb_build_object('seq', g), 'completed', true, 1,
       'null', 1, 3, 0, 'default', 'bench', t, t, t + interval '5 ms'
FROM generate_series(1, {count}) AS g,
     LATERAL (SELECT now() - interval '30 days' + g * interval '2 s') AS moment (t);
INSERT INTO job_events (job_id, at, type, attempt, worker)
SELECT j.id, j.finished_at, e.type, 1, 'bench'
FROM background_jobs j, (VALUES ('queued'), ('started'), ('completed')) AS e (type);
SET session_replication_role = origin;
"""


@contextlib.contextmanager
def history_template(server: str, count: int) -> Iterator[str]:
    """A migrated errands database holding ``count`` finished jobs and their events,
    vacuumed and analysed as autovacuum would leave it; each history run copies it."""
    with fresh_database(server, "errands_history") as db:
        import errands  # noqa: PLC0415

        errands.migrate(db.url)
        with psycopg.connect(db.url, autocommit=True) as conn:
            conn.execute(HISTORY_SQL.format(count=int(count)).encode())
            conn.execute(b"VACUUM ANALYZE background_jobs")
            conn.execute(b"VACUUM ANALYZE job_events")
        yield db.name


# Every table of the database with its indexes and TOAST, whichever library made it:
# what the jobs left on disk (before any vacuum: a queue's life between two).
STORED_SQL = """
SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c
WHERE c.relkind = 'r' AND c.relnamespace = 'public'::regnamespace
"""


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
    """One drain run: the batched insert before it, the start-up, the drain itself."""

    enqueue_rate: float
    startup: float
    drain_rate: float
    bytes_per_job: float = 0.0
    wal_per_job: float = 0.0


async def fill(enqueuer: Enqueuer, jobs: int, batch: int, kind: str = KIND) -> float:
    """Insert ``jobs`` jobs with the batch API; return jobs per second."""
    begin = time.perf_counter()
    for first in range(0, jobs, batch):
        await enqueuer.batch(list(range(first, min(first + batch, jobs))), kind)
    return jobs / (time.perf_counter() - begin)


async def drain(
    contender: Contender,
    server: str,
    args: argparse.Namespace,
    concurrency: int,
    *,
    backlog: int = 0,
    template: str | None = None,
) -> DrainResult:
    """Fill a fresh queue (behind ``backlog`` jobs of another kind, in a copy of
    ``template`` if given), then drain it with one worker."""
    jobs = args.jobs
    with fresh_database(server, contender.name, template) as db:
        if template is None:
            await contender.install(db.url)
        enqueuer = await contender.enqueuer(db.url)
        # The WAL the server wrote from the first insert to the last finish: every
        # database's, so on a shared server it counts others' writes too.
        wal_start = db.scalar("SELECT pg_current_wal_insert_lsn()::text")
        if backlog:
            await fill(enqueuer, backlog, args.batch_size, OTHER)
        enqueue_rate = await fill(enqueuer, jobs, args.batch_size)
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
        wal = db.scalar(f"SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '{wal_start}')")
        finished = db.scalar(contender.finished_sql)
        if finished != jobs or result["handled"] != jobs:
            raise RuntimeError(
                f"{contender.name}: {finished} jobs finished in the database and "
                f"{result['handled']} handled, expected {jobs}"
            )
        return DrainResult(
            enqueue_rate,
            result["first"] - result["begin"],
            jobs / (result["last"] - result["first"]),
            db.scalar(STORED_SQL) / (jobs + backlog),
            float(wal) / (jobs + backlog),
        )


def errands_command() -> list[str]:
    """The ``errands`` command beside this Python, else on the PATH, else ``python -m
    errands`` (a machine where errands' wheel was installed with ``--target``)."""
    beside = Path(sys.executable).with_name("errands")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("errands")
    return [found] if found else [sys.executable, "-m", "errands"]


async def drain_with_cli(
    server: str, args: argparse.Namespace, processes: int = 1, loop: str = "auto"
) -> DrainResult:
    """errands' drain at concurrency 16 (per process) through the ``errands worker``
    command, timed in the database: start-up from the command's start to the first
    claim, the drain from the first claim to the last finish."""
    contender = CONTENDERS["errands"]
    with fresh_database(server, "errands_cli") as db:
        await contender.install(db.url)
        enqueuer = await contender.enqueuer(db.url)
        enqueue_rate = await fill(enqueuer, args.jobs, args.batch_size)
        await enqueuer.close()
        db.checkpoint()
        begin = time.time()
        process = subprocess.Popen(  # noqa: ASYNC220 -- started once, before the timing
            [
                *errands_command(),
                *("worker", "worker_bench_jobs:registry", "--concurrency", "16"),
                *("--processes", str(processes), "--loop", loop),
            ],
            cwd=BENCH_DIR,
            env={**os.environ, "ERRANDS_DATABASE_URL": db.url},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            done = await wait_for_count(db, contender.finished_sql, args.jobs, CHILD_TIMEOUT)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(60)
        if done != args.jobs:
            raise RuntimeError(f"errands worker: {done} of {args.jobs} jobs finished")
        first, last = (
            db.scalar(f"SELECT extract(epoch FROM {edge}) FROM background_jobs")
            for edge in ("min(started_at)", "max(finished_at)")
        )
        return DrainResult(enqueue_rate, float(first) - begin, args.jobs / float(last - first))


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
        spec = {
            "library": contender.name,
            "url": db.url,
            "concurrency": concurrency,
            "keep_starts": True,
        }
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


@dataclass
class Row:
    """One line of the report: every run's figure per library, and which way is better."""

    label: str
    unit: str
    higher_is_better: bool
    runs: dict[str, list[float]] = field(default_factory=dict)

    def median(self, name: str) -> float | None:
        """The library's median figure, if it ran."""
        values = self.runs.get(name)
        return statistics.median(values) if values else None


def report(rows: list[Row], names: list[str]) -> str:
    """The table: per library the median and, in brackets, the lowest and highest run;
    then errands/peer ratios, round by round, as their median and spread (for times,
    below 1 means errands is faster)."""
    peers = [n for n in names if n != "errands"]
    header = ["workload", *names, *(f"errands/{p}" for p in peers), "better"]
    lines = [header]
    for row in rows:
        cells = [f"{row.label} ({row.unit})"]
        cells += [_spread(row.runs.get(n)) for n in names]
        for peer in peers:
            cells.append(_ratios(row.runs.get("errands"), row.runs.get(peer)))
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


def _ratios(ours: list[float] | None, theirs: list[float] | None) -> str:
    """errands/peer per round (the two ran minutes apart, in the same round), as the
    median ratio and, in brackets, the lowest and highest round's."""
    if not ours or not theirs:
        return "-"
    ratios = [a / b for a, b in zip(ours, theirs, strict=False) if b]
    if len(ratios) == 1:
        return f"{ratios[0]:.2f}"
    return f"{statistics.median(ratios):.2f} [{min(ratios):.2f}-{max(ratios):.2f}]"


def _spread(values: list[float] | None) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return _fmt(values[0])
    return f"{_fmt(statistics.median(values))} [{_fmt(min(values))}-{_fmt(max(values))}]"


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.2f}"


class Recorder:
    """Collects every run's figures, row by row, in the order they first appear."""

    def __init__(self) -> None:
        self.rows: dict[str, Row] = {}

    def __call__(self, label: str, unit: str, higher: bool, name: str, value: float) -> None:
        row = self.rows.setdefault(label, Row(label, unit, higher))
        row.runs.setdefault(name, []).append(value)
        print(f"  {name:<14} {label}: {_fmt(value)} {unit}", flush=True)


WORKLOADS = (
    "drain1",
    "drain16",
    "lanes2",
    "history",
    "backlog",
    "cli",
    "cli_asyncio",
    "processes",
    "pickup",
    "enqueue1",
)
"""What ``--workloads`` can pick (the batched enqueue is timed while filling drain16)."""


async def one_round(
    args: argparse.Namespace, server: str, order: list[Contender], record: Recorder, **extra: Any
) -> None:
    """Every workload asked for once, every library in ``order`` for each."""
    await _drains(args, server, order, record)
    if "errands" in args.libraries:
        await _errands_only(args, server, record, extra.get("template"))
    await _latency_and_single(args, server, order, record)


async def _drains(
    args: argparse.Namespace, server: str, order: list[Contender], record: Recorder
) -> None:
    """Drains at concurrency 1 and 16 (the batched enqueue timed while filling the
    latter), and behind a backlog."""
    for concurrency in (1, 16):
        if f"drain{concurrency}" not in args.workloads:
            continue
        for c in order:
            result = await drain(c, server, args, concurrency)
            record(f"drain c={concurrency}", "jobs/s", True, c.name, result.drain_rate)
            record(f"start-up c={concurrency}", "s", False, c.name, result.startup)
            if concurrency == 16:
                label = f"enqueue batch {args.batch_size}"
                record(label, "jobs/s", True, c.name, result.enqueue_rate)
                label = "tables + indexes per job after the drain c=16"
                record(label, "bytes", False, c.name, result.bytes_per_job)
                label = "WAL per job, batched enqueue + drain c=16 (server-wide)"
                record(label, "bytes", False, c.name, result.wal_per_job)
    if "lanes2" in args.workloads and "errands" in args.libraries:
        os.environ["ERRANDS_BENCH_CLAIM_LANES"] = "2"  # the child inherits it
        try:
            result = await drain(CONTENDERS["errands"], server, args, 16)
        finally:
            del os.environ["ERRANDS_BENCH_CLAIM_LANES"]
        label = "drain c=16, WorkerSettings(claim_lanes=2)"
        record(label, "jobs/s", True, "errands", result.drain_rate)
    if "backlog" in args.workloads:
        for c in order:
            result = await drain(c, server, args, 16, backlog=args.backlog)
            label = f"drain c=16 behind {args.backlog:,} jobs of another kind"
            record(label, "jobs/s", True, c.name, result.drain_rate)


async def _errands_only(
    args: argparse.Namespace, server: str, record: Recorder, template: str | None
) -> None:
    """The drain with history, through the real command, and over K processes."""
    if template is not None and "history" in args.workloads:
        result = await drain(CONTENDERS["errands"], server, args, 16, template=template)
        label = f"drain c=16, {args.history:,} finished jobs in the table"
        record(label, "jobs/s", True, "errands", result.drain_rate)
    if "cli" in args.workloads:
        result = await drain_with_cli(server, args)
        record("drain c=16, `errands worker` command", "jobs/s", True, "errands", result.drain_rate)
        record("start-up, `errands worker` command", "s", False, "errands", result.startup)
    if "cli_asyncio" in args.workloads:
        result = await drain_with_cli(server, args, loop="asyncio")
        label = "drain c=16, `errands worker --loop asyncio` command"
        record(label, "jobs/s", True, "errands", result.drain_rate)
    if "processes" in args.workloads:
        for processes in args.processes:
            result = await drain_with_cli(server, args, processes)
            label = f"drain c=16 x {processes}, `errands worker --processes {processes}`"
            record(label, "jobs/s", True, "errands", result.drain_rate)


async def _latency_and_single(
    args: argparse.Namespace, server: str, order: list[Contender], record: Recorder
) -> None:
    """Pickup latency, and enqueueing one job per transaction."""
    if "pickup" in args.workloads:
        for c in order:
            latencies = await pickup_latency(c, server, args.latency_jobs, args.gap, 16)
            for q in (0.5, 0.99):
                label = f"pickup p{round(q * 100)}"
                record(label, "ms", False, c.name, percentile(latencies, q) * 1000)
    if "enqueue1" in args.workloads:
        for c in order:
            rate = await enqueue_single(c, server, args.single_jobs)
            record("enqueue 1/tx", "jobs/s", True, c.name, rate)


async def run_all(args: argparse.Namespace) -> None:
    """Every workload for every library, ``--runs`` rounds, then the table."""
    server = server_url(args.database_url)
    names = args.libraries
    record = Recorder()
    print(conditions(server))
    print(
        f"server: {conninfo_to_dict(server).get('host', 'local socket')}, jobs: {args.jobs}, "
        f"runs: {args.runs}"
    )
    contenders = [CONTENDERS[name] for name in names]
    with contextlib.ExitStack() as stack:
        template = None
        if "errands" in names and args.history and "history" in args.workloads:
            print(f"building the history template ({args.history:,} finished jobs)", flush=True)
            template = stack.enter_context(history_template(server, args.history))
        for run in range(args.runs):
            # Each round in a rotated order: a noisy minute spreads over every library.
            order = contenders[run % len(contenders) :] + contenders[: run % len(contenders)]
            print(f"round {run + 1} of {args.runs}: {', '.join(c.name for c in order)}")
            await one_round(args, server, order, record, template=template)
    print()
    print(report(list(record.rows.values()), names))
    print(f"\nended {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}, "
          f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")  # fmt: skip


SETTINGS = (
    "synchronous_commit",
    "fsync",
    "full_page_writes",
    "shared_buffers",
    "max_wal_size",
    "wal_sync_method",
)


def conditions(server: str) -> str:
    """What a figure depends on, printed at the top of every run: when, the command,
    the machine and its load, the Postgres version and its settings that matter."""
    with psycopg.connect(server, autocommit=True, connect_timeout=10) as conn:
        version = conn.execute("SHOW server_version").fetchone()
        found = conn.execute(
            "SELECT name, setting, unit FROM pg_settings WHERE name = ANY(%s) ORDER BY name",
            (list(SETTINGS),),
        ).fetchall()
    settings = ", ".join(f"{n}={v}{'' if u is None else ' x ' + u}" for n, v, u in found)
    return "\n".join(
        [
            f"started {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}",
            f"command: {' '.join([Path(sys.executable).name, *sys.argv])}",
            f"machine: {platform.node()}, {os.cpu_count()} cores, {platform.platform()}, "
            f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}",
            f"postgres {version[0] if version else '?'}: {settings}",
        ]
    )


class Tee(io.TextIOBase):
    """Standard output, also written to a file: the raw output of every run is kept."""

    def __init__(self, terminal: Any, file: Any) -> None:
        self.terminal = terminal
        self.file = file

    def write(self, text: str) -> int:
        """Write to both."""
        self.file.write(text)
        return int(self.terminal.write(text))

    def flush(self) -> None:
        """Flush both."""
        self.file.flush()
        self.terminal.flush()


def main() -> None:
    """Parse the command line and run the benchmark (or one child worker)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", help="a Postgres server's maintenance database")
    parser.add_argument("--runs", type=int, default=3, help="rounds of every workload")
    parser.add_argument("--jobs", type=int, default=20_000, help="jobs per drain run")
    parser.add_argument(
        "--history", type=int, default=1_000_000, help="finished jobs in the history drain"
    )
    parser.add_argument(
        "--backlog", type=int, default=100_000, help="jobs of another kind in the backlog drain"
    )
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
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: one round, small sizes (figures mean little)",
    )
    parser.add_argument(
        "--workloads",
        nargs="+",
        default=list(WORKLOADS),
        choices=WORKLOADS,
        help="which workloads to run (default: all)",
    )
    parser.add_argument(
        "--processes",
        nargs="+",
        type=int,
        default=sorted({1, os.cpu_count() or 1}),
        help="worker processes for the `errands worker --processes K` rows (default: 1 "
        "and the cores)",
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=BENCH_DIR / "results",
        help="folder where the raw output of the run is kept",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.runs, args.jobs, args.history, args.backlog = 1, 500, 5_000, 2_000
        args.single_jobs, args.latency_jobs, args.batch_size = 50, 20, 250
    logging.basicConfig(level=logging.WARNING)
    # Procrastinate warns that the app lives in __main__ (it matters only for finding
    # tasks by import path, which the benchmark doesn't do).
    logging.getLogger("procrastinate").setLevel(logging.ERROR)
    # errands says, once a minute, that the backlog's kind has no worker: it is meant so.
    logging.getLogger("errands.worker").setLevel(logging.ERROR)
    if args.child:
        child_main(args.child)
        return
    args.results.mkdir(parents=True, exist_ok=True)
    kept = args.results / time.strftime("worker_bench-%Y%m%d-%H%M%S.txt", time.gmtime())
    with kept.open("w") as raw, contextlib.redirect_stdout(Tee(sys.stdout, raw)):
        asyncio.run(run_all(args))
    print(f"raw output kept in {kept}")


if __name__ == "__main__":
    main()
