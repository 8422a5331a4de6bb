"""The service's Postgres pool, and how it behaves while Postgres is away.

psycopg_pool alone serves a web service badly through an outage: a request waits up to
the pool's timeout (30 s) for a connection that cannot come, and the pool's reconnection
attempts back off exponentially, so after an outage of T seconds it served again only
about 0.7T later. :class:`DatabasePool` instead:

* notices the outage from the first connection that comes back broken (or from a
  connection that cannot be had at all), and from then on refuses at once:
  :class:`~errands.sync.errors.Unavailable`, answered as HTTP 503
  ``database_unavailable`` with ``Retry-After``;
* meanwhile probes Postgres every :data:`PROBE_INTERVAL` seconds with a connection of
  its own; the first probe that connects ends the outage: the pool drops the
  connections the outage broke and serves again, within about ``PROBE_INTERVAL`` of
  Postgres accepting connections;
* caps the pool's own reconnection backoff at :data:`RECONNECT_DELAY_CAP`, so the
  connections it replaces are back within a second too, and never gives up on them.

Everything that takes a connection from the pool (shape reads, the fan-out, mutations)
gets this behaviour without knowing about it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from psycopg_pool.pool_async import AddConnection, MaintenanceTask

from errands.connector import connector
from errands.sync.errors import Unavailable

log = logging.getLogger("errands.sync")

PROBE_INTERVAL = 0.2
"""Seconds between connection attempts while Postgres is away."""
PROBE_TIMEOUT = 2
"""Seconds a probe may take to connect (libpq counts whole seconds)."""
RECONNECT_DELAY_CAP = 1.0
"""The longest the pool waits between attempts to replace a lost connection."""


class DatabasePool(AsyncConnectionPool[AsyncConnection[Any]]):
    """An :class:`~psycopg_pool.AsyncConnectionPool` that answers at once while
    Postgres is away and serves again within a second of its return (module docstring).
    """

    def __init__(self, conninfo: str, **options: Any) -> None:
        super().__init__(conninfo, reconnect_timeout=math.inf, **options)
        self.url = conninfo
        self.outage_since: float | None = None
        self._watcher: asyncio.Task[None] | None = None

    def ensure_available(self) -> None:
        """Raise :class:`~errands.sync.errors.Unavailable` during an outage."""
        if self.outage_since is not None:
            raise Unavailable

    async def getconn(self, timeout: float | None = None) -> AsyncConnection[Any]:
        """A connection, or :class:`~errands.sync.errors.Unavailable` at once while
        Postgres is away."""
        self.ensure_available()
        try:
            return await super().getconn(timeout)
        except PoolTimeout:
            if await self._reachable():
                raise  # busy, not away: the ordinary timeout
            self._lost("no connection could be made")
            raise Unavailable from None

    async def putconn(self, conn: AsyncConnection[Any]) -> None:
        """Take a connection back; one that broke in use starts an outage."""
        if conn.broken:
            self._lost("a connection broke")
        await super().putconn(conn)

    async def schedule_task(self, task: MaintenanceTask, delay: float) -> None:
        """Schedule the pool's maintenance, with reconnection attempts at most
        :data:`RECONNECT_DELAY_CAP` apart (psycopg_pool doubles the wait each time)."""
        if isinstance(task, AddConnection):
            delay = min(delay, RECONNECT_DELAY_CAP)
        await super().schedule_task(task, delay)

    async def close(self, timeout: float = 5.0) -> None:
        """Stop probing, then close the pool."""
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        await super().close(timeout)

    def lost(self, reason: str) -> None:
        """Another reader found Postgres gone (the sync hub's change reads): start an
        outage, as a broken connection of the pool's own would."""
        self._lost(reason)

    def _lost(self, reason: str) -> None:
        if self.outage_since is not None or self.closed:
            return
        self.outage_since = time.monotonic()
        log.warning("the database is unreachable (%s): answering 503 until it is back", reason)
        self._watcher = asyncio.create_task(self._wait_for_return(), name="errands-db-probe")

    async def _wait_for_return(self) -> None:
        while not await self._reachable():  # noqa: ASYNC110 -- polling Postgres, no event to await
            await asyncio.sleep(PROBE_INTERVAL)
        try:
            await self.check()  # drop the idle connections the outage broke, replace them
        except Exception:  # the probe connected: serve, and let requests find out
            log.exception("checking the pool's connections failed")
        assert self.outage_since is not None
        log.warning("the database is back after %.1f s", time.monotonic() - self.outage_since)
        self.outage_since = None

    async def _reachable(self) -> bool:
        try:
            probe = await connector().connect_async(self.url, connect_timeout=PROBE_TIMEOUT)
        except psycopg.Error:
            return False
        await probe.close()
        return True
