"""The change-capture core, at the SQL/Python level: concurrent writers committing in any
order (one transaction open throughout) never make a reader skip a committed version,
and every reader ends with exactly the table."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings

from errands.protocol import Filter, Offset, ShapeResponse
from errands.sync.shapes import Shape, parse_offset, read_changes, read_shape
from tests.sync.history import (
    SHAPES,
    WRITERS,
    History,
    Reader,
    Writer,
    matches,
    run,
    shapes,
    steps,
    table_state,
)

_runs = itertools.count()
PAGE_SIZE = 3  # small, so that snapshots are read in several pages


@pytest.fixture
def writers(database_url: str) -> Iterator[list[Writer]]:
    conns = [psycopg.connect(database_url) for _ in range(WRITERS)]
    try:
        yield [Writer(c) for c in conns]
    finally:
        for c in conns:
            c.close()


def shape_of(reader: Reader, kind: str) -> Shape:
    filters = [Filter(column="kind", value=kind), *(Filter(**f) for f in reader.filters)]
    return Shape("background_jobs", tuple(filters), reader.owner)


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
    with asyncio.Runner() as runner:
        conn = runner.run(psycopg.AsyncConnection.connect(database_url, autocommit=True))

        def read(reader: Reader) -> ShapeResponse:
            offset = parse_offset(reader.offset)
            return runner.run(read_shape(conn, shape_of(reader, kind), offset, PAGE_SIZE))

        def read_together(group: list[Reader]) -> list[ShapeResponse]:
            offsets = [Offset.decode(r.offset) for r in group]
            answers = runner.run(read_changes(conn, shape_of(group[0], kind), offsets))
            assert all(isinstance(a, ShapeResponse) for a in answers)
            return answers  # type: ignore[return-value]

        try:
            run(history, readers, ops, read, read_together)
        finally:
            runner.run(conn.close())
    with psycopg.connect(database_url) as check:
        table = table_state(check, kind)
    for reader in readers:
        expected = {k: v for k, v in table.items() if matches(reader.filters, reader.owner, v)}
        assert reader.state == expected


def test_one_query_answers_readers_at_different_offsets(
    database_url: str, writers: list[Writer]
) -> None:
    """Two readers of one shape, one a commit behind the other, read together: each gets
    exactly what its own offset lacks (with the long transaction still open)."""
    kind = f"run{next(_runs)}"
    history = History(kind, writers)
    readers = [Reader([], None), Reader([], None)]
    ops: list[tuple[Any, ...]] = [
        ("read", 0),
        ("read", 1),
        ("insert", 1, "a"),
        ("commit", 1),
        ("read", 0),  # reader 0 is now one commit ahead of reader 1
        ("insert", 2, "b"),
        ("commit", 2),
        ("read", len(readers)),  # both at once
    ]
    calls: list[int] = []
    with asyncio.Runner() as runner:
        conn = runner.run(psycopg.AsyncConnection.connect(database_url, autocommit=True))

        def read(reader: Reader) -> ShapeResponse:
            offset = parse_offset(reader.offset)
            return runner.run(read_shape(conn, shape_of(reader, kind), offset, PAGE_SIZE))

        def read_together(group: list[Reader]) -> list[ShapeResponse]:
            offsets = [Offset.decode(r.offset) for r in group]
            calls.append(len(set(offsets)))
            answers = runner.run(read_changes(conn, shape_of(group[0], kind), offsets))
            assert all(isinstance(a, ShapeResponse) for a in answers)
            return answers  # type: ignore[return-value]

        try:
            run(history, readers, ops, read, read_together)
        finally:
            runner.run(conn.close())
    assert calls == [2]
    assert readers[0].state == readers[1].state != {}
