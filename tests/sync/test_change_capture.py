"""The change-capture core, at the SQL/Python level: concurrent writers committing in any
order (one transaction open throughout) never make a reader skip a committed version,
and every reader ends with exactly the table."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Iterator
from typing import Any

import psycopg
from hypothesis import HealthCheck, given, settings

from errands.protocol import Filter, ShapeResponse
from errands.sync.shapes import Shape, parse_offset, read_shape
from tests.sync.history import (
    SHAPES,
    History,
    Reader,
    Writer,
    check_final_state,
    run,
    shapes,
    steps,
)

_runs = itertools.count()
PAGE_SIZE = 3  # small, so that snapshots are read in several pages


def shape_of(reader: Reader, kind: str) -> Shape:
    filters = [Filter(column="kind", value=kind), *(Filter(**f) for f in reader.filters)]
    return Shape("background_jobs", tuple(filters), reader.owner)


class CoreReads:
    """Shape reads straight through errands.sync.shapes."""

    def __init__(self, runner: asyncio.Runner, conn: psycopg.AsyncConnection[Any], kind: str):
        self.runner, self.conn, self.kind = runner, conn, kind

    def read(self, reader: Reader) -> ShapeResponse:
        offset = parse_offset(reader.offset)
        shape = shape_of(reader, self.kind)
        return self.runner.run(read_shape(self.conn, shape, offset, PAGE_SIZE))


@contextlib.contextmanager
def core_reads(database_url: str, kind: str) -> Iterator[CoreReads]:
    with asyncio.Runner() as runner:
        conn = runner.run(psycopg.AsyncConnection.connect(database_url, autocommit=True))
        try:
            yield CoreReads(runner, conn, kind)
        finally:
            runner.run(conn.close())


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=steps, chosen=shapes)
def test_readers_follow_concurrent_writers_exactly(
    database_url: str, writers: list[Writer], ops: list[tuple[Any, ...]], chosen: list[int]
) -> None:
    kind = f"run{next(_runs)}"
    history = History(kind, writers)
    readers = [Reader(*SHAPES[i]) for i in chosen]
    with core_reads(database_url, kind) as reads:
        run(history, readers, ops, reads.read)
    check_final_state(database_url, kind, readers)
