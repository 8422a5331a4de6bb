"""The :class:`Worker`: claims jobs, runs them, writes back how they ended.

One asyncio loop per process runs these tasks side by side:

* the claim lanes (one by default, each on its own connection) take jobs into free
  slots with ``FOR UPDATE SKIP LOCKED`` whenever there may be work (a notification, a
  finished job, or the polling interval passing), each at most its share of the slots
  at a time, writing the outcomes of finished jobs in the same transaction;
* the listener (:mod:`~errands.worker.listening`) wakes it on ``NOTIFY``;
* the progress writer, the cancellation watcher and the sweeper (which re-queues the
  jobs of dead workers).

The lease (:mod:`~errands.worker.leasing`) is renewed from a thread of its own, so that
no handler can block it; how a handler runs is :mod:`~errands.worker.running`; how an
attempt's outcome is written is :mod:`~errands.worker.finishing`. A job is claimed in one
place (:meth:`Worker._start`) and ends in one place (:meth:`Worker._finish`).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import psycopg

from errands.backoff import Retries
from errands.metrics import WorkerMetrics
from errands.migrations import ensure_migrated
from errands.queries import query
from errands.registry import JobContext, JobHandler, Registry
from errands.schedules import run_schedules
from errands.tracing import job_span
from errands.waiting import event_set
from errands.worker import processes
from errands.worker.connections import RECONNECT, Link
from errands.worker.finishing import Finisher, Outcome
from errands.worker.leasing import Lease, Sweeper
from errands.worker.listening import CANCEL_CHANNEL, listen
from errands.worker.running import attempt
from errands.worker.settings import WorkerSettings
from errands.worker.steps import WorkerSteps
from errands.worker.threads import Abandoned

log = logging.getLogger("errands.worker")

ABORT_GRACE = 5.0  # seconds running handlers get to stop after an abort


@dataclass
class _Running:
    ctx: JobContext
    task: asyncio.Task[None]
    handler: JobHandler
    taken_back: bool = False


class Worker:
    """Runs the jobs of ``registry`` from the database at ``database_url``."""

    def __init__(
        self,
        registry: Registry,
        database_url: str,
        settings: WorkerSettings | None = None,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        if not len(registry):
            raise ValueError("the registry has no handlers; register some with @registry.job")
        for kind in registry.kinds:
            if registry.get(kind).isolation == "process":
                processes.check_startable(registry.get(kind))
        self.registry = registry
        self.database_url = database_url
        self.settings = settings or WorkerSettings()
        self.id = self.settings.worker_id
        self._running: dict[uuid.UUID, _Running] = {}
        self._finisher = Finisher(self.id)
        self._wakeup = asyncio.Event()
        self._flush_now = asyncio.Event()
        self._cancel_hint = asyncio.Event()
        self._stopping = asyncio.Event()
        self._aborting = False
        # Which jobs this worker takes, as the queries' parameters: fixed for its life,
        # so worked out once rather than on every claim.
        self._filter = {
            "kinds": registry.kinds,
            "queues": list(self.settings.queues) if self.settings.queues else None,
        }
        self._jobs = Link(database_url)  # claims and outcomes
        # Each claim lane has a connection; the first is also the outcomes' flusher's.
        lanes = min(self.settings.claim_lanes, self.settings.concurrency)
        self._lanes = [self._jobs, *(Link(database_url) for _ in range(lanes - 1))]
        self._reserved = 0  # slots that claims in flight may fill
        self._side = Link(database_url)  # progress, cancellations, sweeps
        self._steps = WorkerSteps(database_url, self.id)  # handlers' durable steps
        self._metrics = metrics
        self._lease = Lease(
            database_url,
            self.settings,
            registry.kinds,
            self._held,
            self._lost,
            renewed=metrics.lease_renewed if metrics else None,
        )
        self._sweeper = Sweeper(self._side, self._filter)
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- lifecycle -------------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        """Whether the worker was asked to stop (by :meth:`stop`, or itself in burst
        mode); safe to read from any thread."""
        return self._stopping.is_set()

    def stop(self) -> None:
        """Stop claiming; let running jobs finish (up to ``shutdown_timeout``).

        Called a second time, stops at once (:meth:`abort`).
        """
        if self._stopping.is_set():
            self.abort()
        self._stopping.set()
        self._wakeup.set()
        self._flush_now.set()

    def abort(self) -> None:
        """Stop now: interrupt running jobs and put them back in the queue.

        Async handlers are cancelled and process handlers killed; a plain handler's
        thread cannot be interrupted: it is asked to stop (its next ``ctx.progress()``
        raises), and if it does not within a few seconds its job stays with this
        worker until the lease expires, after the process is gone.
        """
        self._aborting = True
        self._stopping.set()
        self._wakeup.set()
        for running in list(self._running.values()):
            running.ctx.request_cancel()
            if running.handler.is_async:
                running.task.cancel()

    async def run(self) -> None:
        """Work until :meth:`stop` is called (or, in burst mode, until no job is left),
        then shut down gracefully.

        Raises ConfigurationError at once if the database cannot be reached or is not
        migrated; once running, the worker rides out database restarts.
        """
        await ensure_migrated(self.database_url)
        self._loop = asyncio.get_running_loop()
        await self._retrying(
            "registering kinds",
            lambda: self._side.execute(query("register_kinds"), self.registry.kind_settings()),
        )
        await self._retrying("taking the lease", lambda: asyncio.to_thread(self._lease.renew))
        self._lease.start()
        stuck: list[uuid.UUID] = []
        try:
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
                    listen(
                        self.database_url,
                        self.settings.listener_check_interval,
                        self._on_notify,
                        self._on_listening,
                    ),
                    self._flush_loop(),
                    self._progress_loop(),
                    self._sweep_loop(),
                    self._cancellation_loop(),
                    run_schedules(self.database_url, self.registry.schedules),
                )
            ]
            try:
                await self._sweep()
                await self._claim_loop()
                stuck = await self._drain()
            finally:
                async with self._finisher.quiet():
                    for task in background:
                        task.cancel()
                    await asyncio.gather(*background, return_exceptions=True)
            await self._retrying("final flush", lambda: self._finisher.flush(self._jobs), 5)
        finally:
            # A job whose handler still runs keeps the lease: it expires after this
            # process is gone, and only then does another worker take the job.
            self._lease.stop(release=not stuck)
            for link in self._lanes:
                await link.close()
            await self._side.close()
            await self._steps.close()
        log.info("worker %s stopped", self.id)

    async def _drain(self) -> list[uuid.UUID]:
        """Wait for running jobs; past the shutdown timeout, abort the rest. Returns the
        jobs whose handler's thread would not stop."""
        if self._running:
            log.info(
                "waiting up to %.0fs for %d running job(s)",
                self.settings.shutdown_timeout,
                len(self._running),
            )
            await self._wait_for_running(self.settings.shutdown_timeout, until_abort=True)
            if self._running:
                self.abort()
                await self._wait_for_running(ABORT_GRACE, until_abort=False)
        stuck = list(self._running)
        for job_id in stuck:
            log.warning(
                "job %s: its handler did not stop; it stays with this worker until the "
                "lease expires (%.0fs after the last renewal), then another worker takes it",
                job_id,
                self.settings.lease,
            )
            self._running[job_id].task.cancel()
        return stuck

    async def _wait_for_running(self, seconds: float, *, until_abort: bool) -> None:
        """Wait until no job runs, for at most ``seconds`` (or until :meth:`abort`)."""
        deadline = time.monotonic() + seconds
        while True:
            self._wakeup.clear()  # set when a job ends, and by abort()
            remaining = deadline - time.monotonic()
            if not self._running or (until_abort and self._aborting) or remaining <= 0:
                return
            await event_set(self._wakeup, remaining)

    async def _retrying(
        self, what: str, action: Callable[[], Awaitable[Any]], attempts: int | None = None
    ) -> None:
        """Run ``action`` until it succeeds (the database may be restarting)."""
        retries = Retries(RECONNECT)
        while True:
            try:
                await action()
                return
            except psycopg.Error as exc:
                delay = retries.failed()
                if attempts is not None and retries.failures >= attempts:
                    log.error("%s failed %d times, giving up: %s", what, retries.failures, exc)
                    return
                if retries.failures == 1:
                    log.warning("%s failed (%s); retrying", what, exc)
                await asyncio.sleep(delay)

    async def _sleep(self, seconds: float) -> None:
        await event_set(self._stopping, seconds)

    # -- claiming --------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        """Run the claim lanes until the worker stops (or one of them fails)."""
        lanes = [asyncio.create_task(self._claim_lane(link)) for link in self._lanes]
        try:
            await asyncio.gather(*lanes)
        finally:
            for lane in lanes:
                lane.cancel()
            await asyncio.gather(*lanes, return_exceptions=True)

    async def _claim_lane(self, link: Link) -> None:
        """Claim into free slots, at most this lane's share at a time: with two lanes
        one claim's round trip overlaps the other's jobs and its Postgres work."""
        retries = Retries(RECONNECT)
        share = -(-self.settings.concurrency // len(self._lanes))
        while not self._stopping.is_set():
            self._wakeup.clear()
            free = min(share, self.settings.concurrency - len(self._running) - self._reserved)
            claimed = 0
            if free > 0:
                self._reserved += free
                try:
                    claimed = await self._claim(link, free)
                    retries.succeeded()
                except psycopg.Error as exc:
                    if not retries.failures:
                        log.warning("claiming jobs failed (%s); retrying", exc)
                    await self._sleep(retries.failed())
                    continue
                finally:
                    self._reserved -= free  # the claimed jobs are in self._running now
            if free > 0 and claimed == free:
                continue  # there may be more; the lane waits only when it is full
            if (
                self.settings.burst
                and not self._running
                and not self._finisher
                and not self._reserved
            ):
                log.info("no runnable job left (burst mode): stopping")
                self.stop()
                return
            await event_set(self._wakeup, self.settings.poll_interval)

    async def _claim(self, link: Link, limit: int) -> int:
        """Claim up to ``limit`` jobs and start them.

        The outcomes of jobs that just finished are written in the same statement, first:
        one round trip and one commit instead of two, which is what a busy worker spends
        its time on.
        """
        finished = self._finisher.take()
        params = {**self._finisher.outcomes(finished), **self._filter, "limit": limit}
        try:
            rows = await link.execute(query("claim_jobs"), params)
            if finished:  # the first row says which of them were written
                head, *rows = rows
                self._finisher.written(finished, head["finished"])
        except psycopg.DataError:
            self._finisher.give_back(finished)
            await self._finisher.flush(link)  # sorts out the outcome Postgres refused
            return 0
        except BaseException:
            self._finisher.give_back(finished)
            raise
        for row in rows:
            self._start(row)
        return len(rows)

    def _start(self, row: dict[str, Any]) -> None:
        """The one place a claimed job starts running."""
        handler = self.registry.get(row["kind"])
        ctx = JobContext(
            row["id"],
            row["kind"],
            row["attempts"],
            row["max_attempts"],
            row["owner"],
            row["submitted_by"],
        )
        ctx.attach(self._steps)
        if row["cancelled"]:
            ctx.request_cancel()
        timeout = row["timeout_seconds"] or handler.timeout
        if self._metrics:
            self._metrics.claimed(row["kind"], row["pickup_seconds"])
        with job_span("errands.claim", row["traceparent"], "consumer") as claim:
            claim.set("errands.job.id", str(row["id"]))
            claim.set("errands.job.attempt", row["attempts"])
        task = asyncio.create_task(
            self._run_job(handler, ctx, row["payload"], timeout, claim.traceparent)
        )
        self._running[row["id"]] = _Running(ctx, task, handler)

    # -- running and finishing -------------------------------------------------------

    async def _run_job(
        self,
        handler: JobHandler,
        ctx: JobContext,
        payload: Any,
        timeout: float | None,
        traceparent: str | None = None,
    ) -> None:
        outcome: Outcome | None = None
        started = time.monotonic()
        try:
            with job_span(f"errands.run {ctx.kind}", traceparent, "internal") as run:
                outcome = await attempt(handler, ctx, payload, timeout, lambda: self._aborting)
                run.set("errands.job.state", outcome.state)
                if outcome.state == "failed":
                    run.failed(outcome.error or "failed")
        except Abandoned:
            pass  # the worker is exiting; the job stays with its lease (see run())
        finally:
            running = self._running.pop(ctx.job_id, None)
            self._wakeup.set()
            if self._metrics:
                state = outcome.state if outcome else None
                self._metrics.ended(ctx.kind, state, time.monotonic() - started)
        if outcome is not None:
            self._finish(outcome, taken_back=running is not None and running.taken_back)

    def _finish(self, outcome: Outcome, *, taken_back: bool = False) -> None:
        """The one place an attempt ends: queue its outcome for writing. While the
        worker claims, the next claim takes it (one commit for both: a job's end makes
        room for the next, so a claim always follows); once it stops claiming, the
        flusher writes it."""
        if taken_back:
            log.warning(
                "job %s: dropping this attempt's outcome (%s): another worker took the "
                "job back while this worker's lease had lapsed",
                outcome.job_id,
                outcome.state,
            )
            return
        self._finisher.add(outcome)
        if self._stopping.is_set():
            self._flush_now.set()
        else:
            self._wakeup.set()

    async def _flush_loop(self) -> None:
        while True:
            await self._flush_now.wait()
            self._flush_now.clear()
            await self._retrying("writing finished jobs", lambda: self._finisher.flush(self._jobs))

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
                await self._side.execute(
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

    def _held(self) -> tuple[uuid.UUID, ...]:
        """The jobs this worker runs; called from the lease's thread (copying a dict's
        keys is atomic under the GIL)."""
        return tuple(self._running)

    def _lost(self, job_ids: list[uuid.UUID]) -> None:
        """Jobs another worker took back while this worker's lease had lapsed; called
        from the lease's thread. Their handlers are asked to stop (plain ones at their
        next progress call) and their outcomes will not be written."""
        for job_id in job_ids:
            running = self._running.get(job_id)
            if running is None:
                continue
            running.taken_back = True
            running.ctx.request_cancel()
            log.warning(
                "job %s: this worker's lease lapsed and another worker took the job back; "
                "stopping this attempt, whose outcome will be dropped",
                job_id,
            )
            if running.handler.is_async and self._loop is not None:
                self._loop.call_soon_threadsafe(running.task.cancel)

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_interval)
            await self._sweep()

    async def _sweep(self) -> None:
        await self._sweeper.sweep()
        self._wakeup.set()  # re-queued jobs may be this worker's to take

    async def _cancellation_loop(self) -> None:
        while True:
            await event_set(self._cancel_hint, self.settings.poll_interval)
            self._cancel_hint.clear()
            if not self._running:
                continue
            try:
                rows = await self._side.execute(
                    query("cancel_requested"), {"ids": list(self._running)}
                )
            except psycopg.Error as exc:
                log.warning("checking for cancellations failed: %s", exc)
                continue
            for row in rows:
                running = self._running.get(row["id"])
                if running and not running.ctx.cancelled:
                    log.info("job %s: cancellation requested", row["id"])
                    running.ctx.request_cancel()
                    if running.handler.is_async:
                        running.task.cancel()

    def _on_listening(self) -> None:
        # Whatever was notified while nobody listened is found by looking.
        self._wakeup.set()
        self._cancel_hint.set()

    def _on_notify(self, channel: str, payload: str) -> None:
        if channel == CANCEL_CHANNEL:
            self._cancel_hint.set()
        elif (
            self.settings.queues is None
            or payload == "*"  # too many queues to name: see errands_wake()
            or set(payload.split(",")) & set(self.settings.queues)
        ):
            self._wakeup.set()
