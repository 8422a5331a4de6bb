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
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Collection
from typing import Any

import psycopg

from errands.backoff import Retries
from errands.queries import query
from errands.worker.connections import RECONNECT
from errands.worker.settings import WorkerSettings

log = logging.getLogger("errands.worker")


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
        self._url = database_url
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
        self._conn: psycopg.Connection[Any] | None = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="errands-lease")

    def renew(self) -> None:
        """Take or extend the lease once; raises psycopg.Error if Postgres is unreachable."""
        held = set(self._held())
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self._url, autocommit=True)
        try:
            with self._conn.transaction():
                self._conn.execute(query("renew_lease"), self._params)
                taken = self._conn.execute(
                    query("jobs_taken_back"), {"ids": list(held), "worker": self._params["id"]}
                ).fetchall()
        except psycopg.Error:
            if self._conn.broken or self._conn.closed:
                self._close()
            raise
        if self._renewed is not None:
            self._renewed()
        # A job that ended meanwhile is no longer held: it was not taken back.
        lost = [job_id for (job_id,) in taken if job_id in set(self._held())]
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
                if self._conn is None or self._conn.closed:
                    self._conn = psycopg.connect(self._url, autocommit=True)
                self._conn.execute(query("release_lease"), {"id": self._params["id"]})
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

    def _close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
            self._conn = None
