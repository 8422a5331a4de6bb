"""Staying in sync: a push loop and a live pull loop, reconnecting with backoff.

:class:`Connection` is a coroutine runner, not a thread: ``Client`` runs it in a thread
of its own, ``AsyncClient`` as a task in the application's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import ValidationError

from errands.backoff import Backoff, Retries
from errands.client.replica import Replica
from errands.client.sync import SyncSession, make_http
from errands.exceptions import DatabaseUnreachable, ErrandsError, ReplicaMismatch, Unauthorized
from errands.protocol import ErrorCode, ErrorResponse

log = logging.getLogger("errands.client")

WATCH_INTERVAL = 0.5
"""Seconds between checks for writes to the replica by other processes."""
FATAL = (Unauthorized, ReplicaMismatch)
"""Errors that retrying cannot fix: the connection stops and says why."""


@dataclass(frozen=True)
class Status:
    """Where the client stands: ``connected``, or ``disconnected`` with a reason; how
    many local changes wait for upload, and how many the server rejected."""

    connected: bool
    reason: str | None = None
    pending: int = 0
    rejected: int = 0

    @property
    def state(self) -> str:
        """``"connected"`` or ``"disconnected"``."""
        return "connected" if self.connected else "disconnected"

    def __str__(self) -> str:
        where = "connected" if self.connected else f"disconnected ({self.reason})"
        return f"{where}, {self.pending} pending"


CLIENT_BACKOFF = Backoff(first=0.1, cap=10.0, jitter="full")
"""Reconnection waits: from 0.1 s doubling to 10 s, full jitter, so that clients which
lost the server together do not come back together."""


class Connection:
    """Keeps one replica in sync with one server until cancelled.

    ``run()`` pushes the outbox whenever it has entries (written by this process or
    another one sharing the file) and follows the jobs shape with long-polls; any
    failure drops the connection, waits (:class:`Backoff`; or, when the server says
    it cannot reach its database, what its ``Retry-After`` says) and starts again. A refused
    token or a replica of another server stops it: retrying cannot help, and ``fatal``
    says why.
    """

    def __init__(
        self, replica: Replica, server: str, token: str | None, backoff: Backoff | None = None
    ) -> None:
        self.replica = replica
        self.server = server
        self.token = token
        self.retries = Retries(backoff or CLIENT_BACKOFF)
        self.connected = False
        self.reason = "not connected"
        self.fatal: ErrandsError | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._outbox_changed: asyncio.Event | None = None
        replica.add_listener(self.poke)

    def poke(self) -> None:
        """The replica changed: wake the push loop (from any thread)."""
        loop, event = self._loop, self._outbox_changed
        if loop is not None and event is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: no one waits
                loop.call_soon_threadsafe(event.set)

    async def run(self) -> None:
        """Sync until cancelled, or until a fatal error (then return; see ``fatal``)."""
        self._loop = asyncio.get_running_loop()
        self._outbox_changed = asyncio.Event()
        self.fatal = None
        self.reason = "connecting"
        try:
            while True:
                try:
                    await self._connected_session()
                except FATAL as exc:
                    log.error("sync stopped: %s", exc)
                    self.fatal = exc
                    self._drop(str(exc))
                    return
                except DatabaseUnreachable as exc:
                    self._drop(str(exc))
                    # The server knows when to come back; spread the retries over as long.
                    await asyncio.sleep(exc.retry_after * (1 + self.retries.policy.rng()))
                    continue
                except ErrandsError as exc:
                    self._drop(str(exc))
                except Exception as exc:  # a bug must not stop syncing for good
                    log.exception("sync: unexpected error")
                    self._drop(f"unexpected error: {type(exc).__name__}: {exc}")
                delay = self.retries.failed()
                log.info("sync: %s; retrying in %.2fs", self.reason, delay)
                await asyncio.sleep(delay)
        except asyncio.CancelledError:
            self._drop("disconnected by the application")
            raise
        finally:
            self._loop = None

    def _drop(self, reason: str) -> None:
        self.connected = False
        self.reason = reason
        self.replica.notify()

    async def _connected_session(self) -> None:
        async with make_http(self.server, self.token) as http:
            http.event_hooks["response"].append(_raise_if_database_unreachable)
            session = SyncSession(self.replica, http)
            await session.check_identity()
            # Connected once a read gets through: the service answers /v1/me even while
            # its database is away.
            up_to_date = await session.pull(live=False)
            self.connected = True
            self.reason = ""
            self.retries.succeeded()
            self.replica.notify()
            log.info("sync: connected to %s", self.server)
            await _first_failure(
                self._push_forever(session),
                self._pull_forever(session, up_to_date),
                self._watch_file(),
            )

    async def _push_forever(self, session: SyncSession) -> None:
        assert self._outbox_changed is not None
        while True:
            self._outbox_changed.clear()
            await session.push()
            await self._outbox_changed.wait()

    async def _watch_file(self) -> None:
        """Notice writes by other processes sharing the replica file (the command line
        next to a running app): upload them, and tell this process's subscribers."""
        while True:
            if await asyncio.to_thread(self.replica.changed_elsewhere):
                self.replica.notify()
            await asyncio.sleep(WATCH_INTERVAL)

    @staticmethod
    async def _pull_forever(session: SyncSession, up_to_date: bool) -> None:
        while True:
            up_to_date = await session.pull(live=up_to_date)


async def _raise_if_database_unreachable(response: httpx.Response) -> None:
    """An httpx response hook: a 503 ``database_unavailable`` becomes
    :class:`DatabaseUnreachable`, with the server's ``Retry-After``."""
    if response.status_code != 503:
        return
    try:
        error = ErrorResponse.model_validate_json(await response.aread()).error
    except ValidationError:
        return  # a proxy's 503: an unreachable server, retried with backoff
    if error.code == ErrorCode.DATABASE_UNAVAILABLE:
        raise DatabaseUnreachable(_seconds(response.headers.get("retry-after")))


def _seconds(retry_after: str | None, default: float = 1.0) -> float:
    """``Retry-After`` in seconds (the delay form; a date or garbage gives ``default``),
    never more than a minute."""
    try:
        seconds = float(retry_after or default)
    except ValueError:
        return default
    return min(max(seconds, 0.0), 60.0) if math.isfinite(seconds) else default


async def _first_failure(*coroutines: Coroutine[Any, Any, None]) -> None:
    """Run the coroutines together until one fails; cancel the others; raise it."""
    tasks = [asyncio.ensure_future(c) for c in coroutines]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            task.result()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
