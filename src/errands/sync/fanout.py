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
import functools
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from errands.protocol import ControlMessage, Offset, ShapeResponse
from errands.queries import query
from errands.sync.errors import ServiceError
from errands.sync.shapes import SYNC_QUERIES, Shape, read_changes, read_shape

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


def _unchanged(offset: str) -> ShapeRead:
    """Up to date at ``offset``, with nothing new."""
    return ShapeRead.of(ShapeResponse(messages=[ControlMessage(type="up-to-date")], offset=offset))


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
    """Live readers held at one offset of a shape, and what ends their wait: the first
    answer with changes, or an error. ``latest`` is the newest answer without changes,
    to end a hold with."""

    offset: Offset
    text: str
    count: int = 0
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    answer: ShapeRead | None = None
    latest: ShapeRead | None = None
    error: ServiceError | None = None


@dataclass(eq=False)
class _ShapeWaiters:
    """Every offset at which live readers of one shape are held."""

    shape: Shape
    at: dict[str, _Waiters] = field(default_factory=dict)


class ShapeHub:
    """Serves shape reads: shared queries within an epoch, and one query per shape per
    change batch for all the live readers held on it, whatever their offsets."""

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
        self.closing = False
        self._pending: dict[tuple[str, str], _Pending] = {}
        self._waiting: dict[str, _ShapeWaiters] = {}
        self._due: set[str] = set()
        self._flush_scheduled = False
        self._refreshing: dict[str, asyncio.Task[None]] = {}
        self._tasks: list[asyncio.Task[None]] = []

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
        for held in self._waiting.values():
            for waiters in held.at.values():
                waiters.ready.set()
        self._waiting.clear()

    def change_batch(self) -> None:
        """Something may have changed: later reads run a new query, and every shape
        with live readers gets one query for all of them."""
        self.epoch += 1
        self.stats.change_batches += 1
        self._pending.clear()
        for key in self._waiting:
            self._refresh_soon(key)

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
        if offset is None or offset.after_key is not None or self.closing:
            return await self.read(shape, offset, text)  # snapshot pages never wait
        deadline = asyncio.get_running_loop().time() + hold
        epoch = self.epoch
        known = None
        pending = self._pending.get((shape.key, text))
        if pending is not None and pending.epoch == epoch:
            known = await self.read(shape, offset, text)
            if known.has_changes or self.closing:
                return known
        waiters = self._join(shape, offset, text)
        if known is None or self.epoch != epoch:
            self._refresh_soon(shape.key)  # nothing read from this offset since the batch
        waiters.count += 1
        self.stats.waiting += 1
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(deadline):
                    await waiters.ready.wait()
        finally:
            waiters.count -= 1
            self.stats.waiting -= 1
            if not waiters.count:
                self._leave(shape.key, waiters)
        if waiters.error is not None:
            raise waiters.error
        return waiters.answer or waiters.latest or known or _unchanged(text)

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

    def _join(self, shape: Shape, offset: Offset, text: str) -> _Waiters:
        held = self._waiting.get(shape.key)
        if held is None:
            held = self._waiting[shape.key] = _ShapeWaiters(shape)
        waiters = held.at.get(text)
        if waiters is None:
            waiters = held.at[text] = _Waiters(offset, text)
        return waiters

    def _leave(self, key: str, waiters: _Waiters) -> None:
        held = self._waiting.get(key)
        if held is not None and held.at.get(waiters.text) is waiters:
            del held.at[waiters.text]
            if not held.at:
                del self._waiting[key]

    def _refresh_soon(self, key: str) -> None:
        # Readers arriving in the same turn of the event loop share the query.
        self._due.add(key)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        # One query in flight per shape: what comes due meanwhile waits for it to end,
        # then goes in the next one (so a burst of readers costs one or two queries).
        for key in self._due - self._refreshing.keys():
            self._due.discard(key)
            held = self._waiting.get(key)
            if held is not None and held.at:
                task = asyncio.create_task(self._refresh(held, list(held.at.values())))
                self._refreshing[key] = task
                task.add_done_callback(functools.partial(self._refreshed, key))

    def _refreshed(self, key: str, _: asyncio.Task[None]) -> None:
        del self._refreshing[key]
        if key in self._due and not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    async def _refresh(self, held: _ShapeWaiters, group: list[_Waiters]) -> None:
        """One query for every offset held on a shape; wake those that have changes."""
        epoch = self.epoch
        self.stats.shape_queries += 1
        answers: Sequence[ShapeResponse | ServiceError]
        try:
            async with self.pool.connection() as conn:
                answers = await read_changes(conn, held.shape, [w.offset for w in group])
        except ServiceError as refused:
            answers = [refused] * len(group)
        except (psycopg.Error, PoolTimeout) as exc:
            log.warning("a shape read failed (%s); retrying at the next batch", exc)
            return  # e.g. the database restarting: the readers wait on
        for waiters, answer in zip(group, answers, strict=True):
            if isinstance(answer, ServiceError):
                waiters.error = answer
            else:
                read = ShapeRead.of(answer)
                if epoch == self.epoch:
                    self._remember(held.shape.key, waiters.text, epoch, read)
                if not read.has_changes:
                    waiters.latest = read
                    continue
                waiters.answer = read
            waiters.ready.set()
            self._leave(held.shape.key, waiters)  # later readers: the cache, or a new wait

    async def _query(self, shape: Shape, offset: Offset | None, epoch: int) -> ShapeRead:
        self.stats.shape_queries += 1
        async with self.pool.connection() as conn:
            response = await read_shape(conn, shape, offset, self.page_size)
        read = ShapeRead.of(response)
        if self.epoch == epoch:
            self._remember(shape.key, None, epoch, read)
        return read

    def _remember(self, key: str, text: str | None, epoch: int, read: ShapeRead) -> None:
        """Cache an answer for its epoch; and since no batch has arrived since it was
        read, readers asking from the offset it returns are up to date without a query."""
        loop = asyncio.get_running_loop()
        if text is not None:
            done = loop.create_future()
            done.set_result(read)
            self._pending.setdefault((key, text), _Pending(epoch, done))
        if read.response.up_to_date:
            caught_up = loop.create_future()
            caught_up.set_result(_unchanged(read.response.offset))
            self._pending.setdefault((key, read.response.offset), _Pending(epoch, caught_up))

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
