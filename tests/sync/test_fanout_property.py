"""The fan-out property: many users and shapes, one change-log read per batch.

The service's :class:`~errands.sync.fanout.ShapeHub` runs in this process on a real
Postgres, without a listener, so that Hypothesis decides when change batches are read.
Concurrent writers (tests/sync/history.py) commit and roll back in any order, with one
transaction open throughout; readers of random shapes (equality and range filters,
users and operators, several readers on one shape) follow live or with plain reads,
join at different times, and hold different offsets. A small change log makes readers
fall behind it, and a small batch cap makes the log start again, so the per-shape SQL
fallbacks are exercised too. At every up-to-date a reader must hold exactly the state
of its shape at its offset (the oracle folds the committed transactions its snapshot
sees), never a row it may not see; at the end exactly what Postgres holds.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg_pool import AsyncConnectionPool

from errands.protocol import Filter
from errands.sync.changes import ChangeLog
from errands.sync.fanout import ShapeHub, ShapeRead
from errands.sync.shapes import Shape, parse_offset
from tests.sync.history import (
    LONG_WRITER,
    History,
    Reader,
    Writer,
    check_final_state,
    random_shape,
    writer_steps,
)

PAGE_SIZE = 3
SETTLE_SECONDS = 30.0
FINAL_ROUNDS = 3
_runs = itertools.count()

MODES = ("plain", "stream", "poll")
readers_of = st.lists(
    st.tuples(random_shape, st.sampled_from(MODES)), min_size=2, max_size=7
).flatmap(
    # Some readers follow another's shape, from offsets of their own.
    lambda chosen: st.lists(st.sampled_from(chosen), max_size=2).map(lambda more: chosen + more)
)


def fanout_steps(readers: int) -> st.SearchStrategy[list[tuple[Any, ...]]]:
    """Writer steps, reader steps and change batches, in any order."""
    read = st.tuples(st.just("read"), st.integers(0, readers - 1))
    return st.lists(
        # As many reads as writes; a batch every few steps.
        st.one_of(st.one_of(*writer_steps), read, st.just(("batch",))),
        min_size=10,
        max_size=60,
    )


@dataclass
class Follower:
    """A reader of the test and how it follows: ``plain`` reads, a ``stream`` (a live
    read again as soon as one ends) or long polls (``poll``: a live read at each of its
    steps, so it comes back from offsets the log has moved past)."""

    reader: Reader
    shape: Shape
    mode: str
    task: asyncio.Task[ShapeRead] | None = None

    @property
    def live(self) -> bool:
        return self.mode != "plain"


class Play:
    """Plays the steps against one hub."""

    def __init__(self, hub: ShapeHub, history: History, followers: list[Follower]) -> None:
        self.hub, self.history, self.followers = hub, history, followers

    def take(self, follower: Follower, answer: ShapeRead) -> None:
        follower.reader.apply(answer.response, self.history)

    async def read(self, follower: Follower) -> None:
        """One step of a reader: a plain read, a snapshot page, or a live read started
        (or, if one is under way, taken when it has ended)."""
        if follower.task is not None:
            if follower.task.done():
                self.take(follower, follower.task.result())
                follower.task = None
            return
        text = follower.reader.offset
        offset = parse_offset(text)
        if not follower.live:
            self.take(follower, await self.hub.read_now(follower.shape, offset))
        elif offset is None or offset.after_key is not None:
            self.take(follower, await self.hub.read(follower.shape, offset, text))
        else:
            live = self.hub.live(follower.shape, offset, text, hold=SETTLE_SECONDS * 4)
            follower.task = asyncio.create_task(live)

    async def streams(self) -> None:
        """Streams take what they were answered and ask again at once."""
        for follower in self.followers:
            if follower.mode != "stream":
                continue
            if follower.task is not None and follower.task.done():
                await self.read(follower)  # takes the answer
            text = follower.reader.offset
            if follower.task is None and text != "-1" and "~" not in text:
                await self.read(follower)  # asks again

    async def settle(self) -> None:
        """Wait until every live read has ended or is held at the cursor; take the ended."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SETTLE_SECONDS
        while True:
            running = [f for f in self.followers if f.task is not None and not f.task.done()]
            if len(running) == self.hub.stats.held:
                break
            assert loop.time() < deadline, "a live reader was neither answered nor held"
            await asyncio.sleep(0.002)
        for follower in self.followers:
            if follower.task is not None and follower.task.done():
                self.take(follower, follower.task.result())
                follower.task = None

    async def batch(self) -> None:
        """A change batch: the hub reads the changes and routes them."""
        self.hub.change_batch()
        await self.hub.catch_up()
        await self.settle()

    async def play(self, ops: list[tuple[Any, ...]]) -> None:
        """The steps, then everything committed, routed, and every reader caught up."""
        self.history.step(("insert", LONG_WRITER, "a"))  # the long transaction first
        for op in ops:
            if op[0] == "read":
                await self.read(self.followers[op[1]])
            elif op[0] == "batch":
                await self.batch()
            else:
                self.history.step(op)
            await self.streams()
        for w in self.history.writers[1:] + self.history.writers[:1]:
            self.history.commit(w)
        for _ in range(FINAL_ROUNDS):  # live readers follow on, as they would
            for follower in self.followers:
                await self.read(follower)
            await self.batch()
        self.hub.release_readers()  # held readers end up to date at the cursor
        for follower in self.followers:
            if follower.task is not None:
                self.take(follower, await follower.task)
                follower.task = None
        for follower in self.followers:
            while True:
                offset = parse_offset(follower.reader.offset)
                answer = await self.hub.read_now(follower.shape, offset)
                self.take(follower, answer)
                if answer.response.up_to_date:
                    break


def shape_of(reader: Reader, kind: str) -> Shape:
    filters = [Filter(column="kind", value=kind), *(Filter(**f) for f in reader.filters)]
    return Shape("background_jobs", tuple(filters), reader.owner)


@pytest.fixture
def runner() -> AsyncIterator[asyncio.Runner]:
    with asyncio.Runner() as made:
        yield made


async def _utc(conn: psycopg.AsyncConnection[Any]) -> None:
    await conn.execute("SET TIME ZONE 'UTC'")


async def play(
    database_url: str,
    history: History,
    followers: list[Follower],
    ops: list[tuple[Any, ...]],
    change_log: ChangeLog,
) -> ShapeHub:
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        database_url,
        min_size=1,
        max_size=4,
        kwargs={"autocommit": True, "prepare_threshold": None},
        configure=_utc,
        open=False,
    )
    await pool.open(wait=True)
    hub = ShapeHub(
        pool, database_url, page_size=PAGE_SIZE, poll_interval=3600, change_log=change_log
    )
    hub.start(listen=False)
    try:
        await Play(hub, history, followers).play(ops)
    finally:
        await hub.stop()
        await pool.close()
    return hub


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    data=st.data(),
    chosen=readers_of,
    log_size=st.sampled_from([4, 10_000]),
    batch_cap=st.sampled_from([3, 10_000]),
)
def test_many_users_and_shapes_follow_concurrent_writers_exactly(
    database_url: str,
    writers: list[Writer],
    runner: asyncio.Runner,
    data: st.DataObject,
    chosen: list[tuple[tuple[list[dict[str, Any]], str | None], str]],
    log_size: int,
    batch_cap: int,
) -> None:
    ops = data.draw(fanout_steps(len(chosen)), label="ops")
    kind = f"fan{next(_runs)}"
    history = History(kind, writers)
    readers = [Reader(list(filters), owner) for (filters, owner), _ in chosen]
    followers = [
        Follower(r, shape_of(r, kind), mode) for r, (_, mode) in zip(readers, chosen, strict=True)
    ]
    change_log = ChangeLog(max_changes=log_size, max_batch=batch_cap)
    runner.run(play(database_url, history, followers, ops, change_log))
    check_final_state(database_url, kind, readers)
