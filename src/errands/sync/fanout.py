"""Fan-out: one query per shape and offset per change batch, shared by live readers.

A *change batch* is anything that may have changed a synced table: a NOTIFY on
``errands_sync`` (sent once per writing statement by a trigger), or the polling
interval passing (notifications are hints; a lost one must not stall anyone). Each
batch starts a new *epoch*. The first reader of a (shape, offset) in an epoch starts
the query; every other reader of the same shape and offset in that epoch awaits the
same result, encoded to JSON once. Live readers whose answer had no changes sleep until
the next batch, so N clients waiting on one shape cost one query per batch, not N.
(A plain, not live, read runs its own query: it must see every commit that preceded it,
and a shared answer may predate a commit whose notification is still on its way.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from errands.protocol import ControlMessage, Offset, ShapeResponse
from errands.queries import query
from errands.sync.errors import ServiceError
from errands.sync.shapes import SYNC_QUERIES, Shape, read_shape

log = logging.getLogger("errands.sync")

LISTENER_CHECK_INTERVAL = 10.0
MAX_RECONNECT_DELAY = 30.0


@dataclass(frozen=True)
class ShapeRead:
    """A shared answer: the response, its JSON, whether it carries any change, and the
    offset to read on from (each worked out once for every reader)."""

    response: ShapeResponse
    body: bytes
    has_changes: bool
    next_offset: Offset

    @classmethod
    def of(cls, response: ShapeResponse) -> ShapeRead:
        """Wrap a response, encoding it once for every reader."""
        changes = not response.up_to_date or any(
            m.type in {"upsert", "delete"} for m in response.messages
        )
        body = response.model_dump_json().encode()
        return cls(response, body, changes, Offset.decode(response.offset))


@dataclass
class FanoutStats:
    """Counters that show the fan-out at work."""

    change_batches: int = 0
    notifications: int = 0
    polls: int = 0
    shape_queries: int = 0
    waiting: int = 0
    listening: bool = False


@dataclass
class _Pending:
    epoch: int
    task: asyncio.Future[ShapeRead] = field(repr=False)


@dataclass(eq=False)
class _Waiters:
    """Live readers of one shape held at one offset, and what wakes them: the first
    answer with changes, or an error that ends their wait."""

    shape: Shape
    offset: Offset | None
    text: str
    count: int = 0
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    answer: ShapeRead | None = None
    error: BaseException | None = None


class ShapeHub:
    """Serves shape reads, sharing each query among the readers of one epoch."""

    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        conninfo: str,
        *,
        page_size: int,
        poll_interval: float,
    ) -> None:
        self.pool = pool
        self.conninfo = conninfo
        self.page_size = page_size
        self.poll_interval = poll_interval
        self.stats = FanoutStats()
        self.epoch = 0
        self._pending: dict[tuple[str, str], _Pending] = {}
        self._waiting: dict[tuple[str, str], _Waiters] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.closing = False

    def start(self) -> None:
        """Start listening for notifications and polling."""
        self._tasks = [
            asyncio.create_task(self._listen(), name="errands-sync-listener"),
            asyncio.create_task(self._poll(), name="errands-sync-poller"),
        ]

    async def stop(self) -> None:
        """Stop listening and polling."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    def release_readers(self) -> None:
        """The service is stopping: answer every held live read now, end streams."""
        self.closing = True
        for waiters in self._waiting.values():
            waiters.ready.set()
        self._waiting.clear()

    def change_batch(self) -> None:
        """Something may have changed: later reads run a new query, and each group of
        live readers held at one offset gets one query, which wakes them if it found
        changes."""
        self.epoch += 1
        self.stats.change_batches += 1
        self._pending.clear()
        for waiters in list(self._waiting.values()):
            self._refresh(waiters)

    def _refresh(self, waiters: _Waiters) -> None:
        read = asyncio.ensure_future(self.read(waiters.shape, waiters.offset, waiters.text))
        read.add_done_callback(lambda done: self._wake(waiters, done))

    def _wake(self, waiters: _Waiters, read: asyncio.Future[ShapeRead]) -> None:
        if read.cancelled():
            return
        error = read.exception()
        if error is not None and not isinstance(error, ServiceError):
            log.warning("a shape read failed (%s); retrying at the next batch", error)
            return  # e.g. the database restarting: the readers wait on
        if error is None and not read.result().has_changes:
            return
        waiters.answer, waiters.error = (None, error) if error else (read.result(), None)
        waiters.ready.set()
        if self._waiting.get((waiters.shape.key, waiters.text)) is waiters:
            # Later readers of this offset get the answer from the read cache.
            del self._waiting[(waiters.shape.key, waiters.text)]

    async def read(self, shape: Shape, offset: Offset | None, text: str) -> ShapeRead:
        """The answer for ``shape`` from ``offset`` (its wire form is ``text``), shared
        with every other reader of the same shape and offset in this epoch."""
        key = (shape.key, text)
        pending = self._pending.get(key)
        if pending is None or pending.epoch != self.epoch:
            task = asyncio.create_task(self._query(shape, offset, self.epoch))
            pending = _Pending(self.epoch, task)
            self._pending[key] = pending
            task.add_done_callback(lambda done: self._forget_failure(key, done))
        if pending.task.done():
            return pending.task.result()
        # A reader that goes away must not cancel the query the others wait for.
        return await asyncio.shield(pending.task)

    async def read_now(self, shape: Shape, offset: Offset | None) -> ShapeRead:
        """The answer as of now, from a query of this reader's own: a plain (not live)
        read issued after a commit must see it, even before its notification arrives."""
        return await self._query(shape, offset, self.epoch)

    async def live(self, shape: Shape, offset: Offset | None, text: str, hold: float) -> ShapeRead:
        """The first answer with changes, or up-to-date after ``hold`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + hold
        epoch = self.epoch
        answer = await self.read(shape, offset, text)
        if answer.has_changes or self.closing:
            return answer
        key = (shape.key, text)
        waiters = self._waiting.get(key)
        if waiters is None:
            waiters = self._waiting[key] = _Waiters(shape, offset, text)
        if self.epoch != epoch:  # a batch came while reading: it may not be in the answer
            self._refresh(waiters)
        waiters.count += 1
        self.stats.waiting += 1
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(deadline):
                    await waiters.ready.wait()
        finally:
            waiters.count -= 1
            self.stats.waiting -= 1
            if not waiters.count and self._waiting.get(key) is waiters:
                del self._waiting[key]
        if waiters.error is not None:
            raise waiters.error
        return waiters.answer or answer

    async def stream(
        self, shape: Shape, offset: Offset | None, text: str, hold: float
    ) -> AsyncIterator[ShapeRead]:
        """Answers, one after another, for as long as the caller iterates."""
        answer = await self.read(shape, offset, text)
        while True:
            yield answer
            if self.closing:
                return
            text, offset = answer.response.offset, answer.next_offset
            if answer.response.up_to_date:
                answer = await self.live(shape, offset, text, hold)
            else:  # the next page of a snapshot
                answer = await self.read(shape, offset, text)

    async def _query(self, shape: Shape, offset: Offset | None, epoch: int) -> ShapeRead:
        self.stats.shape_queries += 1
        async with self.pool.connection() as conn:
            response = await read_shape(conn, shape, offset, self.page_size)
        if response.up_to_date and self.epoch == epoch:
            # No batch has arrived since the read began, so readers asking from the
            # offset it returns are up to date: they need no query of their own.
            caught_up = ShapeResponse(
                messages=[ControlMessage(type="up-to-date")], offset=response.offset
            )
            done = asyncio.get_running_loop().create_future()
            done.set_result(ShapeRead.of(caught_up))
            self._pending.setdefault((shape.key, response.offset), _Pending(epoch, done))
        return ShapeRead.of(response)

    def _forget_failure(self, key: tuple[str, str], task: asyncio.Future[ShapeRead]) -> None:
        # A failed read (say, the database restarting) is not cached for the epoch.
        if task.cancelled() or task.exception() is not None:
            pending = self._pending.get(key)
            if pending is not None and pending.task is task:
                del self._pending[key]

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval)
            self.stats.polls += 1
            self.change_batch()

    async def _listen(self) -> None:
        delay = 0.5
        while True:
            try:
                await self._listen_once()
            except psycopg.Error as exc:
                log.warning("sync listener lost its connection (%s); polling until back", exc)
            if self.stats.listening:  # it had worked: retry soon
                delay = 0.5
            self.stats.listening = False
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_RECONNECT_DELAY)

    async def _listen_once(self) -> None:
        async with await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True) as conn:
            await conn.execute(query("listen", SYNC_QUERIES))
            self.stats.listening = True
            # Notifications sent while nobody listened are lost: sweep once.
            self.change_batch()
            while True:
                async for _ in conn.notifies(timeout=LISTENER_CHECK_INTERVAL):
                    self.stats.notifications += 1
                    self.change_batch()
                await conn.execute(query("ping", SYNC_QUERIES))  # a dead connection raises
