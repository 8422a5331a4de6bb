"""The in-memory filter matcher decides exactly as Postgres does, or says it cannot.

For random rows and filters (every operator, on integer, real, boolean, uuid, text and
timestamp columns, with values near and equal to the row's), the matcher's answer on
the row as a shape delivers it must be Postgres's answer for the shape's SQL filter.
"""

from __future__ import annotations

import contextlib
import itertools
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql

from errands.protocol import Filter
from errands.sync.changes import Change
from errands.sync.routing import ShapeIndex, Undecidable, compile_matcher, messages
from errands.sync.shapes import Shape

_runs = itertools.count()

int32 = st.integers(-(2**31), 2**31 - 1)
instants = st.datetimes(
    min_value=datetime(1970, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)
texts = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=4)
COLUMNS: dict[str, st.SearchStrategy[Any]] = {
    "priority": int32,
    "progress": st.floats(0, 1, width=32),
    "cancelled": st.booleans(),
    "queue": texts,
    "progress_message": st.none() | texts,
    "run_at": instants,
    "started_at": st.none() | instants,
}
OPS = ["eq", "ne", "lt", "lte", "gt", "gte", "in", "is_null", "not_null"]


def wire(value: Any) -> Any:
    """A filter value as a client sends it (JSON)."""
    return value.isoformat() if isinstance(value, datetime) else value


@st.composite
def rows_and_filters(draw: st.DrawFn) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    row = {column: draw(values) for column, values in COLUMNS.items()}
    filters = []
    for _ in range(draw(st.integers(1, 3))):
        column = draw(st.sampled_from(sorted(COLUMNS)))
        op = draw(st.sampled_from(OPS))
        values = COLUMNS[column].filter(lambda v: v is not None)
        if column == "progress":  # a filter value real must round, as Postgres rounds it
            values |= st.floats(-1, 2)
        near = st.just(row[column]) if row[column] is not None else values
        if op in {"is_null", "not_null"}:
            filters.append({"column": column, "op": op})
        elif op == "in":
            chosen = draw(st.lists(near | values, min_size=1, max_size=3))
            filters.append({"column": column, "op": op, "value": [wire(v) for v in chosen]})
        else:
            filters.append({"column": column, "op": op, "value": wire(draw(near | values))})
    return row, filters


@pytest.fixture
def conn(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(database_url, autocommit=True) as made:
        made.execute("SET TIME ZONE 'UTC'")
        yield made


def rows_of(conn: psycopg.Connection[Any], shape: Shape) -> list[dict[str, Any]]:
    statement, params = shape.compose("snapshot_page")
    params |= {"after": None, "limit": 10}
    return [row for _, row in conn.execute(statement, params).fetchall()]


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=rows_and_filters())
def test_the_matcher_decides_as_postgres_does(
    conn: psycopg.Connection[Any], case: tuple[dict[str, Any], list[dict[str, Any]]]
) -> None:
    values, filters = case
    kind = f"route{next(_runs)}"
    insert = sql.SQL("INSERT INTO background_jobs (id, kind, {}) VALUES (%s, %s, {})").format(
        sql.SQL(", ").join(map(sql.Identifier, values)),
        sql.SQL(", ").join(sql.Placeholder() * len(values)),
    )
    conn.execute(insert, (uuid.uuid4(), kind, *values.values()))
    mine = Filter(column="kind", value=kind)
    (row,) = rows_of(conn, Shape("background_jobs", (mine,)))
    wanted = tuple(Filter(**f) for f in filters)
    matcher = compile_matcher(wanted)
    try:
        in_postgres = bool(rows_of(conn, Shape("background_jobs", (mine, *wanted))))
    except psycopg.errors.DataError:  # e.g. a value that underflows real
        refused = []
        for f in wanted:
            with contextlib.suppress(Undecidable):
                compile_matcher((f,))(row)
                continue
            refused.append(f)
        assert refused, filters  # the matcher does not decide what Postgres refuses
        return
    try:
        in_memory = matcher(row)
    except Undecidable:
        # Only what the module says Python cannot decide: ordering text.
        text = {"queue", "progress_message"}
        assert any(f["column"] in text and f["op"] in {"lt", "lte", "gt", "gte"} for f in filters)
        return
    assert in_memory == in_postgres, (row, filters)


def test_jsonb_filters_are_left_to_postgres() -> None:
    matcher = compile_matcher((Filter(column="payload", op="eq", value={"a": 1}),))
    with pytest.raises(Undecidable):
        matcher({"payload": {"a": 1}})


def test_changes_reach_the_owners_shapes_and_the_operators_only() -> None:
    index = ShapeIndex()
    index.add("alice-all", "alice")
    index.add("alice-queued", "alice")
    index.add("bob-all", "bob")
    index.add("ops", None)
    row = {"owner": "alice", "state": "running"}
    change = Change("k1", row, frozenset({"alice"}), (10,))
    routed = index.route([change])
    assert sorted(routed) == ["alice-all", "alice-queued", "ops"]
    index.remove("alice-queued", "alice")
    assert sorted(index.route([change])) == ["alice-all", "ops"]
    # A row that left the queued shape goes to it as a delete.
    queued = compile_matcher((Filter(column="state", value="queued"),))
    assert [m.type for m in messages("alice", queued, [change])] == ["delete"]
    assert [m.type for m in messages("alice", compile_matcher(()), [change])] == ["upsert"]
    assert messages("bob", compile_matcher(()), [change]) == []


def test_a_shape_confined_to_ids_hears_only_of_those_jobs() -> None:
    a, b, c = (str(uuid.uuid4()) for _ in range(3))
    confined = Shape(
        "background_jobs",
        (
            Filter(column="id", op="in", value=[a, b.upper()]),
            Filter(column="id", op="in", value=[b, c]),
            Filter(column="state", value="queued"),
        ),
    ).confined
    assert confined == frozenset({b})  # intersected, written as id::text writes it
    assert Shape("background_jobs", (Filter(column="state", value="queued"),)).confined is None
    running = {"owner": "alice", "state": "running"}
    changes = [Change(key, running, frozenset({"alice"}), (10,)) for key in (a, b)]
    queued = compile_matcher((Filter(column="state", value="queued"),))
    # b left the shape: a delete; a never was in it: nothing.
    assert [(m.type, m.key) for m in messages(None, queued, changes, confined)] == [("delete", b)]  # type: ignore[union-attr]
    assert len(messages(None, queued, changes)) == 2
