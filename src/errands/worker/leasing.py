"""This worker's lease: one row in ``errands_workers`` covering every job it holds.

The lease is renewed every ``heartbeat_interval`` from a thread of its own on a
connection of its own, so nothing a handler does can hold it up: not a plain handler
past its timeout, not an async handler that blocks the event loop. While Postgres is
unreachable the thread retries every fraction of a second (see
:data:`~errands.worker.connections.RECONNECT`), so a worker is back well inside its lease
after an outage shorter than the lease.

If the lease lapsed anyway (Postgres unreachable for longer than the lease) and another
worker recovered some of this worker's jobs meanwhile, the renewal finds them (the
renewal and ``recover_orphans`` both lock the worker's row, so one sees the other's
effect), asks their handlers to stop and logs that their outcomes will be dropped.

The :class:`Sweeper` is the other side: it re-queues the jobs of workers whose lease
expired.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Collection
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

from errands.backoff import Retries
from errands.connector import connector
from errands.queries import query
from errands.worker.connections import RECONNECT, Link
from errands.worker.settings import WorkerSettings

log = logging.getLogger("errands.worker")

UNKNOWN_KINDS_INTERVAL = 60.0


class Lease:
    """Renews this worker's lease; reports held jobs that were taken back."""

    def __init__(
        self,
        database_url: str,
        settings: WorkerSettings,
        kinds: list[str],
        held: Callable[[], Collection[uuid.UUID]],
        lost: Callable[[list[uuid.UUID]], None],
        renewed: Callable[[], None] | None = None,
    ) -> None:
        self._settings = settings
        self._held = held
        self._lost = lost
        self._renewed = renewed  # metrics: counts renewals
        self._params = {
            "id": settings.worker_id,
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "queues": list(settings.queues) if settings.queues else None,
            "kinds": kinds,
            "lease": settings.lease,
        }
        # Over TCP, a connection cut off without a word (a network partition) fails within
        # a third of the lease rather than hanging until the kernel gives up (minutes):
        # the renewal then reconnects as soon as the network heals.
        self._conninfo = make_conninfo(
            database_url,
            connect_timeout=max(2, round(settings.lease / 3)),
            tcp_user_timeout=round(settings.lease * 1000 / 3),
        )
        self._conn: psycopg.Connection[Any] | None = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="errands-lease")

    def renew(self) -> None:
        """Take or extend the lease once; raises psycopg.Error if Postgres is unreachable."""
        held = set(self._held())
        conn = self._connect()
        try:
            with conn.transaction():
                conn.execute(query("renew_lease"), self._params)
                taken = conn.execute(
                    query("jobs_taken_back"), {"ids": list(held), "worker": self._params["id"]}
                ).fetchall()
        except psycopg.Error:
            if conn.broken or conn.closed:
                self._close()
            raise
        if self._renewed is not None:
            self._renewed()
        # A job that ended meanwhile is no longer held: it was not taken back.
        still_held = set(self._held())
        lost = [job_id for (job_id,) in taken if job_id in still_held]
        if lost:
            self._lost(lost)

    def start(self) -> None:
        """Renew the lease in the background from now on."""
        self._thread.start()

    def stop(self, *, release: bool) -> None:
        """Stop renewing; with ``release``, give the lease up (otherwise it expires)."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()
        if release:
            with contextlib.suppress(psycopg.Error):
                self._connect().execute(query("release_lease"), {"id": self._params["id"]})
        self._close()

    def _run(self) -> None:
        retries = Retries(RECONNECT)
        wait = self._settings.heartbeat_interval
        while not self._stopping.wait(wait):
            try:
                self.renew()
            except psycopg.Error as exc:
                wait = min(retries.failed(), self._settings.heartbeat_interval)
                if retries.failures == 1:
                    log.warning("renewing the lease failed (%s); retrying", exc)
            else:
                if retries.failures:
                    log.info("lease renewed again after %d failed attempt(s)", retries.failures)
                retries.succeeded()
                wait = self._settings.heartbeat_interval

    def _connect(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = connector().connect(self._conninfo, autocommit=True)
        return self._conn

    def _close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
            self._conn = None


class Sweeper:
    """Recovers the jobs of workers whose lease expired: any live worker does it, so
    there is no cron to write."""

    def __init__(self, link: Link, job_filter: dict[str, Any]) -> None:
        self._link = link
        self._filter = job_filter
        self._warned_kinds: set[str] = set()
        self._next_kinds_check = 0.0

    async def sweep(self) -> None:
        """Re-queue the jobs of dead workers; say which queued kinds nobody handles."""
        try:
            for row in await self._link.execute(query("recover_orphans")):
                log.warning("job %s lost its worker; now %s", row["id"], row["state"])
            await self._link.execute(query("forget_dead_workers"))
            if time.monotonic() >= self._next_kinds_check:
                # It reads every queued job: once a minute, not on every heartbeat.
                self._next_kinds_check = time.monotonic() + UNKNOWN_KINDS_INTERVAL
                await self._warn_unknown_kinds()
        except psycopg.Error as exc:
            log.warning("sweep failed: %s", exc)

    async def _warn_unknown_kinds(self) -> None:
        rows = await self._link.execute(query("queued_unknown_kinds"), self._filter)
        for row in rows:
            if row["kind"] not in self._warned_kinds:
                self._warned_kinds.add(row["kind"])
                log.warning(
                    "%d queued job(s) of kind %r wait for a worker that has a handler for it",
                    row["count"],
                    row["kind"],
                )
