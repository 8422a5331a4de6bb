"""Fan-out: one read per change batch for every shape, routed to live readers in memory.

A *change batch* is anything that may have changed a synced table: a NOTIFY on
``errands_sync`` (sent once per writing statement by a trigger), or the polling
interval passing (notifications are hints; a lost one must not stall anyone). Batches
run one at a time; what comes meanwhile is folded into the next. Each runs one
statement that reads every row version committed since the cursor, for all shapes at
once, into the change log (:mod:`errands.sync.changes`, where the visibility argument
is written out). An idle service thus costs one query per polling interval, and a busy
one one query per batch, whatever the number of shapes, users and offsets held. Batches
have a connection of their own: they are every live reader's heartbeat and must not
queue behind snapshot reads for the pool (a cold start of thousands of users).

A live reader at offset ``O`` is answered from the log in memory: the newest state of
each row changed after ``O``, kept if the reader's permission and filters say so
(:mod:`errands.sync.routing`). With nothing for it, the reader is *held* at the cursor:
held readers of one shape share one slot, indexed by the owner whose rows they may see,
and each batch visits only the slots of the owners whose rows it changed. A slot a
batch concerns is answered once for all its readers and encoded once; the others stay
held, up to date at the new cursor, which is what they are told when their hold ends.

Where the log cannot answer exactly, the reader gets the per-shape SQL read instead,
shared by the readers of one shape and offset: an offset older than the log, another
database generation, a filter only Postgres can decide, a batch too large to keep.
Snapshot pages are per-shape SQL reads too, shared within an epoch (between two
batches); and a plain (not live) read runs its own query, since it must see every
commit that preceded it, even one whose notification is still on its way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from errands.backoff import Backoff, Retries
from errands.connector import connector
from errands.protocol import ControlMessage, Message, Offset, ShapeResponse
from errands.queries import query
from errands.sync.changes import Change, ChangeLog, read_batch
from errands.sync.errors import Unavailable
from errands.sync.routing import Matcher, ShapeIndex, Undecidable, compile_matcher, messages
from errands.sync.shapes import SYNC_QUERIES, Position, Shape, check_offset, read_shape

log = logging.getLogger("errands.sync")

LISTENER_CHECK_INTERVAL = 10.0
MAX_RECONNECT_DELAY = 30.0
LISTEN_BACKOFF = Backoff(first=0.5, cap=MAX_RECONNECT_DELAY, jitter="none")
"""The listener's reconnection waits (one process, one connection: no jitter needed)."""


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


def _up_to_date(found: list[Message], offset: str) -> ShapeRead:
    response = ShapeResponse(messages=[*found, ControlMessage(type="up-to-date")], offset=offset)
    return ShapeRead.of(response)


@dataclass
class FanoutStats:
    """Counters that show the fan-out at work: wake-ups (notifications and polls), the
    change-log reads they caused, per-shape SQL reads (snapshot pages, plain reads and
    fallbacks), live readers waiting now and how many of them are held at the cursor
    (the others wait for a batch or a SQL read), and row states held in the log."""

    change_batches: int = 0
    notifications: int = 0
    polls: int = 0
    change_queries: int = 0
    shape_queries: int = 0
    waiting: int = 0
    held: int = 0
    log_changes: int = 0
    listening: bool = False


@dataclass
class _Pending:
    epoch: int
    task: asyncio.Future[ShapeRead] = field(repr=False)


@dataclass(eq=False)
class _Held:
    """The live readers of one shape held at the cursor. A batch that concerns the
    shape ends the slot with an ``answer``, or with ``recheck``: the snapshot from which
    its readers go on through SQL (the batch could not be routed in memory)."""

    shape: Shape
    matcher: Matcher
    count: int = 0
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    answer: ShapeRead | None = None
    recheck: Offset | None = None


class _Behind(Exception):
    """The cursor does not yet see everything the offset sees: wait for a batch."""


class _Unreachable(Exception):
    """Only the shape's SQL read can answer from this offset."""


class ShapeHub:
    """Serves shape reads: one change-log read per batch routed in memory to every
    live reader, shared SQL reads for snapshots and what the log cannot answer."""

    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        conninfo: str,
        *,
        page_size: int,
        poll_interval: float,
        change_log: ChangeLog | None = None,
        on_database_lost: Callable[[str], None] | None = None,
    ) -> None:
        self.pool = pool
        self.on_database_lost = on_database_lost
        self.database_lost = False
        """Whether the last change batch failed: live readers get 503 rather than a
        quiet "up to date" while nothing can be known (cleared by the next batch)."""
        self.conninfo = conninfo
        self.page_size = page_size
        self.poll_interval = poll_interval
        self.log = change_log or ChangeLog()
        self.stats = FanoutStats()
        self.epoch = 0
        self.closing = False
        self._pending: dict[tuple[str, str], _Pending] = {}
        self._fallbacks: dict[tuple[str, str], asyncio.Future[ShapeRead]] = {}
        self._held: dict[str, _Held] = {}
        self._index = ShapeIndex()
        self._wanted = asyncio.Event()
        self._batch_done = asyncio.Event()
        self._started = 0  # batches started
        self._finished = 0  # the number of the last batch applied
        self._idle: ShapeRead | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._conn: psycopg.AsyncConnection[Any] | None = None

    def start(self, *, listen: bool = True) -> None:
        """Start reading batches, polling, and (``listen``) following notifications."""
        self._tasks = [
            asyncio.create_task(self._read_batches(), name="errands-sync-batches"),
            asyncio.create_task(self._poll(), name="errands-sync-poller"),
        ]
        if listen:
            self._tasks.append(asyncio.create_task(self._listen(), name="errands-sync-listener"))
        self._wanted.set()  # the first batch fixes the cursor

    async def stop(self) -> None:
        """Stop listening, polling and reading batches."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    def release_readers(self) -> None:
        """The service is stopping: answer every held live read now, end streams."""
        self.closing = True
        for held in list(self._held.values()):
            self._release(held)
        self._batch_done.set()

    def change_batch(self) -> None:
        """Something may have changed: later snapshot reads run a new query, and the
        next batch reads the changes into the log."""
        self.epoch += 1
        self.stats.change_batches += 1
        self._pending.clear()
        self._wanted.set()

    async def catch_up(self) -> None:
        """Return once a batch started after this call has been applied: the log then
        holds every change committed before the call."""
        wanted = self._started + 1
        while self._finished < wanted:
            done = self._batch_done
            self._wanted.set()
            await done.wait()
            if self.closing:
                return

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
        self._check_database()
        deadline = asyncio.get_running_loop().time() + hold
        self.stats.waiting += 1
        try:
            return await self._follow(shape, offset, text, deadline)
        finally:
            self.stats.waiting -= 1

    async def stream(
        self, shape: Shape, offset: Offset | None, text: str, hold: float
    ) -> AsyncIterator[ShapeRead]:
        """Answers, one after another, for as long as the caller iterates."""
        answer = await self._first(shape, offset, text)
        while True:
            yield answer
            if self.closing:
                return
            text, offset = answer.response.offset, answer.next_offset
            if answer.response.up_to_date:
                answer = await self.live(shape, offset, text, hold)
            else:  # the next page of a snapshot
                answer = await self.read(shape, offset, text)

    async def _first(self, shape: Shape, offset: Offset | None, text: str) -> ShapeRead:
        """An answer at once: from the log if it can, else from SQL."""
        if offset is None or offset.after_key is not None:
            return await self.read(shape, offset, text)
        try:
            found = self._from_log(shape, compile_matcher(shape.filters), offset)
        except (_Behind, _Unreachable):
            return await self._read_sql(shape, offset, text)
        return _up_to_date(found, self._cursor_text()) if found else self._idle_answer()

    # -- a live reader's way through the log --------------------------------------------

    def _from_log(self, shape: Shape, matcher: Matcher, offset: Offset) -> list[Message]:
        """What a reader at ``offset`` lacks, as of the cursor, from memory."""
        position = self.log.position
        if position is None:
            raise _Behind
        if offset.generation != position.generation:
            raise _Unreachable
        if not self.log.covers(offset):
            raise _Behind
        check_offset(offset, position)  # past the retention horizon: must refetch
        if not self.log.reaches(offset):
            raise _Unreachable
        try:
            return messages(shape.owner, matcher, self.log.since(offset), shape.confined)
        except Undecidable:
            raise _Unreachable from None

    async def _follow(self, shape: Shape, offset: Offset, text: str, deadline: float) -> ShapeRead:
        matcher = compile_matcher(shape.filters)
        fresh = self._started + 1  # the first batch that starts after the reader came
        while not self.closing:
            self._check_database()
            try:
                found = self._from_log(shape, matcher, offset)
            except _Behind:
                if self._finished < fresh:
                    if not await self._next_batch(deadline):
                        break
                    continue
                found = None  # a newer batch did not cover it: let SQL say why
            except _Unreachable:
                found = None
            if found is None:
                answer = await self._read_sql(shape, offset, text)
                if answer.has_changes:
                    return answer
                offset, text, fresh = answer.next_offset, answer.response.offset, self._started + 1
                continue
            if found:
                return _up_to_date(found, self._cursor_text())
            held = await self._hold(shape, matcher, deadline)
            self._check_database()
            if held.answer is not None:
                return held.answer
            if held.recheck is None:  # hold over (or closing): up to date at the cursor
                return self._idle_answer()
            offset = held.recheck
            text = offset.encode()
        return _up_to_date([], text)

    async def _hold(self, shape: Shape, matcher: Matcher, deadline: float) -> _Held:
        """Wait, held at the cursor, until a batch concerns the shape or ``deadline``."""
        held = self._held.get(shape.key)
        if held is None:
            held = self._held[shape.key] = _Held(shape, matcher)
            self._index.add(shape.key, shape.owner)
        held.count += 1
        self.stats.held += 1
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(deadline):
                    await held.ready.wait()
        finally:
            held.count -= 1
            self.stats.held -= 1
            if not held.count and self._held.get(shape.key) is held:
                self._unhold(held)
        return held

    async def _next_batch(self, deadline: float) -> bool:
        """Ask for a batch and wait for it (False: ``deadline`` came first)."""
        done = self._batch_done
        self._wanted.set()
        try:
            async with asyncio.timeout_at(deadline):
                await done.wait()
        except TimeoutError:
            return False
        return True

    async def _read_sql(self, shape: Shape, offset: Offset, text: str) -> ShapeRead:
        """The shape's SQL read from ``offset``, shared by its readers until the next
        batch (so that its snapshot is never older than the log's cursor)."""
        key = (shape.key, text)
        task = self._fallbacks.get(key)
        if task is None:
            task = asyncio.ensure_future(self._query(shape, offset, self.epoch))
            self._fallbacks[key] = task
            task.add_done_callback(lambda done: self._forget_fallback(key, done))
        return await asyncio.shield(task)

    def _forget_fallback(self, key: tuple[str, str], task: asyncio.Future[ShapeRead]) -> None:
        if (task.cancelled() or task.exception() is not None) and self._fallbacks.get(key) is task:
            del self._fallbacks[key]

    def _cursor_text(self) -> str:
        position = self.log.position
        assert position is not None
        return position.snapshot.encode()

    def _idle_answer(self) -> ShapeRead:
        """Up to date at the cursor, with nothing new (encoded once per cursor)."""
        if self._idle is None:
            self._idle = _up_to_date([], self._cursor_text())
        return self._idle

    def _unhold(self, held: _Held) -> None:
        del self._held[held.shape.key]
        self._index.remove(held.shape.key, held.shape.owner)

    def _release(
        self, held: _Held, answer: ShapeRead | None = None, recheck: Offset | None = None
    ) -> None:
        held.answer, held.recheck = answer, recheck
        held.ready.set()
        if self._held.get(held.shape.key) is held:
            self._unhold(held)

    # -- batches ------------------------------------------------------------------------

    async def _read_batches(self) -> None:
        while True:
            await self._wanted.wait()
            self._wanted.clear()
            self._started += 1
            number = self._started
            try:
                conn = await self._connection()
                position, changes = await read_batch(conn, self.log.cursor, self.log.max_batch)
            except psycopg.Error as exc:
                log.warning("reading the changes failed (%s); retrying at the next batch", exc)
                self._lose_database(str(exc))
                if self._conn is not None:
                    await self._conn.close()
                    self._conn = None
                await asyncio.sleep(min(self.poll_interval, 1.0))
                continue
            self.stats.change_queries += 1
            self.database_lost = False
            try:
                self._apply(position, changes)
            except Exception:
                # A fault in routing must not stop every reader's sync for good: the log
                # starts again here and held readers catch up through their own reads.
                log.exception("routing a change batch failed; the change log starts again")
                self._apply(position, None)
            self._finished = number
            done, self._batch_done = self._batch_done, asyncio.Event()
            done.set()

    def _check_database(self) -> None:
        if self.database_lost:
            raise Unavailable

    def _lose_database(self, reason: str) -> None:
        """The change log cannot move on: every held or waiting live reader gets 503 at
        once (a stream ends; the client retries after Retry-After)."""
        self.database_lost = True
        if self.on_database_lost is not None:
            self.on_database_lost(reason)
        for held in list(self._held.values()):
            self._release(held)
        done, self._batch_done = self._batch_done, asyncio.Event()
        done.set()

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = await connector().connect_async(
                self.conninfo, autocommit=True, prepare_threshold=None
            )
            await self._conn.execute(query("use_utc", SYNC_QUERIES))
        return self._conn

    def _apply(self, position: Position, changes: tuple[Change, ...] | None) -> None:
        """Add a batch to the log and answer the held slots it concerns (synchronously:
        a slot still held afterwards is up to date at the new cursor)."""
        before = self.log.position
        self._idle = None
        self._fallbacks.clear()
        if before is None or changes is None or position.generation != before.generation:
            if before is not None:
                log.info("the change log starts again (a restored database or a large batch)")
            self.log.restart(position)
            for held in list(self._held.values()):
                self._release(held, recheck=before.snapshot if before else None)
        else:
            batch = self.log.append(position, changes)
            until = batch.until.encode()
            for key, routed in self._index.route(batch.changes).items():
                held = self._held[key]
                try:
                    found = messages(held.shape.owner, held.matcher, routed, held.shape.confined)
                except Undecidable:
                    self._release(held, recheck=batch.since)
                    continue
                if found:
                    self._release(held, answer=_up_to_date(found, until))
        self.stats.log_changes = self.log.size

    # -- per-shape SQL reads ------------------------------------------------------------

    async def _query(self, shape: Shape, offset: Offset | None, epoch: int) -> ShapeRead:
        self.stats.shape_queries += 1
        async with self.pool.connection() as conn:
            response = await read_shape(conn, shape, offset, self.page_size)
        read = ShapeRead.of(response)
        if self.epoch == epoch:
            self._remember(shape.key, read)
        return read

    def _remember(self, key: str, read: ShapeRead) -> None:
        """No batch has arrived since ``read``: a snapshot reader asking from the offset
        it returns is up to date without a query."""
        if read.response.up_to_date:
            caught_up = asyncio.get_running_loop().create_future()
            caught_up.set_result(_up_to_date([], read.response.offset))
            self._pending.setdefault((key, read.response.offset), _Pending(self.epoch, caught_up))

    def _forget_failure(self, key: tuple[str, str], task: asyncio.Future[ShapeRead]) -> None:
        # A failed read (say, the database restarting) is not cached for the epoch.
        if task.cancelled() or task.exception() is not None:
            pending = self._pending.get(key)
            if pending is not None and pending.task is task:
                del self._pending[key]

    # -- wake-ups -----------------------------------------------------------------------

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval)
            self.stats.polls += 1
            self.change_batch()

    async def _listen(self) -> None:
        retries = Retries(LISTEN_BACKOFF)
        while True:
            try:
                await self._listen_once()
            except psycopg.Error as exc:
                log.warning("sync listener lost its connection (%s); polling until back", exc)
            if self.stats.listening:  # it had worked: retry soon
                retries.succeeded()
            self.stats.listening = False
            await asyncio.sleep(retries.failed())

    async def _listen_once(self) -> None:
        async with await connector().connect_async(self.conninfo, autocommit=True) as conn:
            await conn.execute(query("listen", SYNC_QUERIES))
            self.stats.listening = True
            # Notifications sent while nobody listened are lost: sweep once.
            self.change_batch()
            while True:
                async for _ in conn.notifies(timeout=LISTENER_CHECK_INTERVAL):
                    self.stats.notifications += 1
                    self.change_batch()
                await conn.execute(query("ping", SYNC_QUERIES))  # a dead connection raises
