"""The worker: claims jobs from Postgres, runs their handlers, writes back the outcome.

One asyncio loop per process runs these tasks side by side:

* the claim loop takes up to ``concurrency`` jobs with ``FOR UPDATE SKIP LOCKED``
  whenever a slot is free and there may be work (a notification, a finished job, or
  the polling interval passing);
* the listener holds ``LISTEN`` on its own connection, checks its health and
  reconnects; notifications are hints, never the source of truth;
* the flusher writes finished jobs and throttled progress in batched statements;
* the heartbeat renews this worker's lease, re-queues the jobs of workers whose lease
  expired, and watches for cancellation requests.

Async handlers run on the loop; plain ones in daemon threads, so a stuck plain handler
can never keep the process from exiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from errands.exceptions import JobCancelled, JobTimeout
from errands.migrations import ensure_migrated
from errands.payloads import dump_json, printable
from errands.queries import query
from errands.registry import JobContext, JobHandler, Registry
from errands.schedules import run_schedules

log = logging.getLogger("errands.worker")

JOBS_CHANNEL = "errands_jobs"
CANCEL_CHANNEL = "errands_cancel"
UNKNOWN_KINDS_INTERVAL = 60.0


@dataclass(frozen=True)
class WorkerSettings:
    """How a worker behaves; the defaults suit production, tests shorten them."""

    concurrency: int = 10
    queues: tuple[str, ...] | None = None
    poll_interval: float = 1.0
    lease: float = 30.0
    heartbeat_interval: float = 5.0
    progress_interval: float = 0.25
    shutdown_timeout: float = 30.0
    listener_check_interval: float = 10.0
    worker_id: str = field(
        default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    )

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self.heartbeat_interval >= self.lease:
            raise ValueError("heartbeat_interval must be shorter than the lease")


@dataclass(frozen=True)
class _Outcome:
    """How one attempt ended, as the finish_jobs query takes it."""

    job_id: uuid.UUID
    state: str
    result: str | None = None
    error: str | None = None
    retry_in: float | None = None


@dataclass
class _Running:
    ctx: JobContext
    task: asyncio.Task[None]
    is_async: bool


class Worker:
    """Runs the jobs of ``registry`` from the database at ``database_url``."""

    def __init__(
        self, registry: Registry, database_url: str, settings: WorkerSettings | None = None
    ) -> None:
        if not len(registry):
            raise ValueError("the registry has no handlers; register some with @registry.job")
        self.registry = registry
        self.database_url = database_url
        self.settings = settings or WorkerSettings()
        self.id = self.settings.worker_id
        self._running: dict[uuid.UUID, _Running] = {}
        self._finished: list[_Outcome] = []
        self._wakeup = asyncio.Event()
        self._flush_now = asyncio.Event()
        self._cancel_hint = asyncio.Event()
        self._stopping = asyncio.Event()
        self._aborting = False
        self._pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] | None = None
        self._warned_kinds: set[str] = set()
        self._next_kinds_check = 0.0
        # Which jobs this worker takes, as the queries' parameters: fixed for its life,
        # so worked out once rather than on every claim.
        self._filter = {
            "kinds": registry.kinds,
            "queues": list(self.settings.queues) if self.settings.queues else None,
        }

    # -- lifecycle -------------------------------------------------------------------

    def stop(self) -> None:
        """Stop claiming; let running jobs finish (up to ``shutdown_timeout``)."""
        if self._stopping.is_set():
            self.abort()
        self._stopping.set()
        self._wakeup.set()
        self._flush_now.set()

    def abort(self) -> None:
        """Stop now: interrupt running jobs and put them back in the queue.

        A plain handler's thread cannot be interrupted: its job is re-queued at once
        and the thread is abandoned (it stops at its next progress call).
        """
        self._aborting = True
        self._stopping.set()
        self._wakeup.set()
        for running in list(self._running.values()):
            running.ctx.request_cancel()
            running.task.cancel()

    async def run(self) -> None:
        """Work until :meth:`stop` is called, then shut down gracefully.

        Raises ConfigurationError at once if the database cannot be reached or is not
        migrated; once running, the worker rides out database restarts.
        """
        await ensure_migrated(self.database_url)
        self._pool = AsyncConnectionPool(
            self.database_url,
            min_size=1,
            max_size=4,
            open=False,
            kwargs={"autocommit": True},
        )
        await self._pool.open()
        try:
            await self._retrying("register", self._register)
            log.info(
                "worker %s started: kinds %s, queues %s, concurrency %d",
                self.id,
                ", ".join(self.registry.kinds),
                ", ".join(self.settings.queues or ("all",)),
                self.settings.concurrency,
            )
            background = [
                asyncio.create_task(coro)
                for coro in (
                    self._listen(),
                    self._flush_loop(),
                    self._progress_loop(),
                    self._heartbeat_loop(),
                    self._cancellation_loop(),
                    run_schedules(self.database_url, self.registry.schedules),
                )
            ]
            try:
                await self._sweep()
                await self._claim_loop()
                await self._drain()
            finally:
                for task in background:
                    task.cancel()
                await asyncio.gather(*background, return_exceptions=True)
            await self._retrying("final flush", self._flush, attempts=5)
            with contextlib.suppress(psycopg.Error):
                await self._execute(query("unregister_worker"), {"id": self.id})
            log.info("worker %s stopped", self.id)
        finally:
            await self._pool.close()

    async def _drain(self) -> None:
        """Wait for running jobs; past the shutdown timeout, abort the rest."""
        if not self._running:
            return
        log.info(
            "waiting up to %.0fs for %d running job(s)",
            self.settings.shutdown_timeout,
            len(self._running),
        )
        tasks = [r.task for r in self._running.values()]
        _, pending = await asyncio.wait(tasks, timeout=self.settings.shutdown_timeout)
        if pending:
            self.abort()
            await asyncio.wait(pending, timeout=5)

    # -- database helpers ------------------------------------------------------------

    async def _execute(
        self, sql: Any, params: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        return await self._transaction((sql, params))

    async def _transaction(
        self, *statements: tuple[Any, dict[str, Any] | None]
    ) -> list[dict[str, Any]]:
        """Run statements in one transaction; return the last one's rows.

        A broken connection (say, after a database restart) raises here and is discarded
        by the pool; the caller retries with a fresh one.
        """
        assert self._pool is not None
        rows: list[dict[str, Any]] = []
        async with self._pool.connection() as conn:
            # One statement commits on its own: BEGIN and COMMIT would cost round trips.
            scope = conn.transaction() if len(statements) > 1 else contextlib.nullcontext()
            async with scope, conn.cursor(row_factory=dict_row) as cur:
                for sql, params in statements:
                    await cur.execute(sql, params)
                    rows = await cur.fetchall() if cur.description else []
        return rows

    async def _retrying(
        self, what: str, action: Callable[[], Awaitable[Any]], attempts: int | None = None
    ) -> None:
        """Run ``action`` until it succeeds (the database may be restarting)."""
        delay = 0.1
        tried = 0
        while True:
            try:
                await action()
                return
            except psycopg.Error as exc:
                tried += 1
                if attempts is not None and tried >= attempts:
                    log.error("%s failed %d times, giving up: %s", what, tried, exc)
                    return
                log.warning("%s failed (%s); retrying in %.1fs", what, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _register(self) -> None:
        await self._transaction(
            (
                query("register_worker"),
                {
                    "id": self.id,
                    "hostname": socket.gethostname(),
                    "pid": os.getpid(),
                    **self._filter,
                    "lease": self.settings.lease,
                },
            ),
            (query("register_kinds"), self.registry.kind_settings()),
        )

    # -- claiming --------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        delay = 0.1
        while not self._stopping.is_set():
            self._wakeup.clear()
            free = self.settings.concurrency - len(self._running)
            claimed = 0
            if free > 0:
                try:
                    claimed = await self._claim(free)
                    delay = 0.1
                except psycopg.Error as exc:
                    log.warning("claiming jobs failed (%s); retrying in %.1fs", exc, delay)
                    await self._sleep(delay)
                    delay = min(delay * 2, 5.0)
                    continue
            if free > 0 and claimed == free:
                continue  # there may be more; the loop waits only when it is full
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), self.settings.poll_interval)

    async def _claim(self, limit: int) -> int:
        """Claim up to ``limit`` jobs and start them.

        The outcomes of jobs that just finished are written in the same transaction:
        one commit instead of two, which is what a busy worker spends its time on.
        """
        finished = self._take_finished()
        claim = (
            query("claim_jobs"),
            {
                **self._filter,
                "limit": limit,
                "worker": self.id,
            },
        )
        try:
            if finished:
                rows = await self._transaction(self._finish_statement(finished), claim)
            else:
                rows = await self._transaction(claim)
        except psycopg.DataError:
            self._finished[:0] = finished
            await self._flush()  # sorts out the outcome Postgres refused
            return 0
        except BaseException:
            self._finished[:0] = finished
            raise
        for row in rows:
            self._start(row)
        return len(rows)

    def _start(self, row: dict[str, Any]) -> None:
        handler = self.registry.get(row["kind"])
        ctx = JobContext(row["id"], row["kind"], row["attempts"], row["max_attempts"])
        if row["cancelled"]:
            ctx.request_cancel()
        timeout = row["timeout_seconds"] or handler.timeout
        task = asyncio.create_task(self._run_job(handler, ctx, row["payload"], timeout))
        self._running[row["id"]] = _Running(ctx, task, handler.is_async)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    # -- running a job ---------------------------------------------------------------

    async def _run_job(
        self, handler: JobHandler, ctx: JobContext, payload: Any, timeout: float | None
    ) -> None:
        try:
            outcome = await self._attempt(handler, ctx, payload, timeout)
        finally:
            self._running.pop(ctx.job_id, None)
            self._wakeup.set()
        self._finish(outcome)

    async def _attempt(
        self, handler: JobHandler, ctx: JobContext, payload: Any, timeout: float | None
    ) -> _Outcome:
        try:
            ctx.check()
            async with asyncio.timeout(timeout):
                if handler.is_async:
                    result = await handler.function(ctx, payload)
                else:
                    result = await _in_thread(handler.function, ctx, payload)
            return _Outcome(ctx.job_id, "completed", result=dump_json(result, "result"))
        except JobCancelled:
            return _Outcome(ctx.job_id, "cancelled")
        except asyncio.CancelledError:
            # Re-queued even if also cancelled: the cancel trigger ends it as cancelled.
            if self._aborting:
                return _requeue(ctx.job_id, "the worker shut down")
            if ctx.cancelled:
                return _Outcome(ctx.job_id, "cancelled")
            raise
        except TimeoutError as exc:
            ctx.request_cancel()  # a plain handler still running sees it at its next check
            error = JobTimeout(f"the job ran longer than its timeout of {timeout}s")
            return self._failure(handler, ctx, error, exc.__traceback__)
        except BaseException as exc:  # noqa: BLE001 -- a handler's failure is the job's, not ours
            return self._failure(handler, ctx, exc, exc.__traceback__)

    def _failure(
        self, handler: JobHandler, ctx: JobContext, exc: BaseException, tb: Any
    ) -> _Outcome:
        message = str(exc) or type(exc).__name__
        error = _error(
            type(exc).__name__,
            message,
            traceback="".join(traceback.format_exception(type(exc), exc, tb)),
            attempt=ctx.attempt,
        )
        if handler.should_retry(exc, ctx.attempt, ctx.max_attempts):
            delay = handler.backoff(ctx.attempt)
            log.info(
                "job %s failed (attempt %d of %d), retrying in %.1fs: %s",
                ctx.job_id,
                ctx.attempt,
                ctx.max_attempts,
                delay,
                message,
            )
            return _Outcome(ctx.job_id, "queued", error=error, retry_in=delay)
        log.warning("job %s failed after %d attempt(s): %s", ctx.job_id, ctx.attempt, message)
        return _Outcome(ctx.job_id, "failed", error=error)

    def _finish(self, outcome: _Outcome) -> None:
        """Queue an outcome for writing. While the worker claims, the next claim takes it
        (one commit for both: a job's end makes room for the next, so a claim always
        follows); once it stops claiming, the flusher writes it."""
        self._finished.append(outcome)
        if self._stopping.is_set():
            self._flush_now.set()
        else:
            self._wakeup.set()

    # -- writing back ----------------------------------------------------------------

    async def _flush_loop(self) -> None:
        while True:
            await self._flush_now.wait()
            self._flush_now.clear()
            await self._retrying("writing finished jobs", self._flush)

    async def _flush(self) -> None:
        finished = self._take_finished()
        if not finished:
            return
        try:
            await self._transaction(self._finish_statement(finished))
        except psycopg.DataError:
            await self._finish_one_by_one(finished)
        except BaseException:
            self._finished[:0] = finished  # written by the next flush or claim
            raise

    async def _finish_one_by_one(self, finished: list[_Outcome]) -> None:
        """Write outcomes singly, failing the job whose outcome Postgres refuses, so that
        one unstorable result can never wedge the others."""
        for outcome in finished:
            try:
                await self._transaction(self._finish_statement([outcome]))
            except psycopg.DataError as exc:
                error = _error("StorageError", f"cannot store: {exc}")
                failed = _Outcome(outcome.job_id, "failed", error=error)
                await self._transaction(self._finish_statement([failed]))

    def _take_finished(self) -> list[_Outcome]:
        finished, self._finished = self._finished, []
        return finished

    def _finish_statement(self, batch: list[_Outcome]) -> tuple[Any, dict[str, Any]]:
        return (
            query("finish_jobs"),
            {
                "ids": [o.job_id for o in batch],
                "states": [o.state for o in batch],
                "results": [o.result for o in batch],
                "errors": [o.error for o in batch],
                "retry_in": [o.retry_in for o in batch],
                "worker": self.id,
            },
        )

    async def _progress_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.progress_interval)
            reports = [
                (job_id, report)
                for job_id, running in list(self._running.items())
                if (report := running.ctx.take_progress()) is not None
            ]
            if not reports:
                continue
            try:
                await self._execute(
                    query("write_progress"),
                    {
                        "ids": [job_id for job_id, _ in reports],
                        "progress": [fraction for _, (fraction, _) in reports],
                        "messages": [message for _, (_, message) in reports],
                        "worker": self.id,
                    },
                )
            except psycopg.Error as exc:
                # Progress is advisory: a newer report replaces this one.
                log.warning("writing progress failed: %s", exc)

    # -- leases, recovery, cancellation ----------------------------------------------

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_interval)
            try:
                renewed = await self._execute(
                    query("heartbeat"), {"id": self.id, "lease": self.settings.lease}
                )
                if not renewed:
                    log.warning("worker %s had been forgotten; registering again", self.id)
                    await self._register()
                await self._sweep()
            except psycopg.Error as exc:
                log.warning("heartbeat failed: %s", exc)

    async def _sweep(self) -> None:
        """Re-queue the jobs of dead workers; say which queued kinds nobody handles."""
        try:
            for row in await self._execute(query("recover_orphans")):
                log.warning("job %s lost its worker; now %s", row["id"], row["state"])
            await self._execute(query("forget_dead_workers"))
            if time.monotonic() >= self._next_kinds_check:
                # It reads every queued job: once a minute, not on every heartbeat.
                self._next_kinds_check = time.monotonic() + UNKNOWN_KINDS_INTERVAL
                await self._warn_unknown_kinds()
        except psycopg.Error as exc:
            log.warning("sweep failed: %s", exc)
        self._wakeup.set()

    async def _warn_unknown_kinds(self) -> None:
        rows = await self._execute(query("queued_unknown_kinds"), self._filter)
        for row in rows:
            if row["kind"] not in self._warned_kinds:
                self._warned_kinds.add(row["kind"])
                log.warning(
                    "%d queued job(s) of kind %r wait for a worker that has a handler for it",
                    row["count"],
                    row["kind"],
                )

    async def _cancellation_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._cancel_hint.wait(), self.settings.poll_interval)
            self._cancel_hint.clear()
            if not self._running:
                continue
            try:
                rows = await self._execute(query("cancel_requested"), {"ids": list(self._running)})
            except psycopg.Error as exc:
                log.warning("checking for cancellations failed: %s", exc)
                continue
            for row in rows:
                running = self._running.get(row["id"])
                if running and not running.ctx.cancelled:
                    log.info("job %s: cancellation requested", row["id"])
                    running.ctx.request_cancel()
                    if running.is_async:
                        running.task.cancel()

    async def _listen(self) -> None:
        """LISTEN for wake-ups; reconnect after any failure, sweeping after each."""
        delay = 0.1
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self.database_url, autocommit=True
                ) as conn:
                    await conn.execute(f"LISTEN {JOBS_CHANNEL}")
                    await conn.execute(f"LISTEN {CANCEL_CHANNEL}")
                    delay = 0.1
                    # Whatever was notified while nobody listened is found by a sweep.
                    self._wakeup.set()
                    self._cancel_hint.set()
                    while True:
                        timeout = self.settings.listener_check_interval
                        async for notify in conn.notifies(timeout=timeout):
                            self._on_notify(notify.channel, notify.payload)
                        await conn.execute("SELECT 1")  # health check
            except psycopg.Error as exc:
                log.warning("listener lost its connection (%s); reconnecting in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _on_notify(self, channel: str, payload: str) -> None:
        if channel == CANCEL_CHANNEL:
            self._cancel_hint.set()
        elif self.settings.queues is None or set(payload.split(",")) & set(self.settings.queues):
            self._wakeup.set()


def _requeue(job_id: uuid.UUID, reason: str) -> _Outcome:
    return _Outcome(job_id, "queued", error=_error("WorkerShutdown", reason), retry_in=0.0)


def _error(kind: str, message: str, **more: Any) -> str:
    """A job's ``error`` column: ``{type, message, ...}`` as JSON, every string made
    storable (a NUL or a lone surrogate in a message must not wedge the writes)."""
    fields = {"type": kind, "message": message, **more}
    return json.dumps({k: printable(v) if isinstance(v, str) else v for k, v in fields.items()})


async def _in_thread(function: Callable[..., Any], *args: Any) -> Any:
    """Run ``function`` in a daemon thread and await its result.

    A daemon thread rather than an executor: a handler that never returns must not keep
    the process alive after shutdown.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def settle(outcome: Callable[[Any], None], value: Any) -> None:
        if not future.done():
            outcome(value)

    def target() -> None:
        try:
            value = function(*args)
        except BaseException as exc:  # noqa: BLE001 -- handed to the awaiting coroutine
            loop.call_soon_threadsafe(settle, future.set_exception, exc)
        else:
            loop.call_soon_threadsafe(settle, future.set_result, value)

    threading.Thread(target=target, daemon=True, name="errands-handler").start()
    return await future
