"""A model of concurrent writers and shape readers, for the change-capture property tests.

Writers are real Postgres transactions (one connection each) that insert jobs, write
worker-style progress, cancel and delete, and commit or roll back in an order chosen by
Hypothesis, with one long-running transaction open from the first step to the last.
Every committed transaction is recorded with its transaction id, in commit order.

The oracle: the state a reader must hold at offset ``O`` is the fold of every recorded
transaction that ``O`` covers (:meth:`errands.protocol.Offset.covers`), which is exactly
Postgres's visibility rule. Each reader applies the messages it gets and, whenever an
answer says up-to-date, must hold exactly that state; a version it skipped would show.
"""

from __future__ import annotations

import operator
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from hypothesis import strategies as st
from psycopg.types.json import Jsonb

from errands.protocol import DeleteMessage, Offset, ShapeResponse, UpsertMessage

WRITERS = 3
LONG_WRITER = 0  # opened at the first step, committed only at the end
READERS = 4
OWNERS = ("a", "b", "c", "d")

# What a reader compares: (owner, progress, cancelled, version). Every write stores a
# new version number in the payload, so each committed version is distinguishable.
Version = tuple[str, float, bool, int]
State = dict[str, Version]

writer_steps = [
    st.tuples(st.just("insert"), st.integers(0, WRITERS - 1), st.sampled_from(OWNERS)),
    st.tuples(
        st.just("progress"),
        st.integers(0, WRITERS - 1),
        st.integers(0, 30),
        st.integers(0, 8),
    ),
    st.tuples(st.just("cancel"), st.integers(0, WRITERS - 1), st.integers(0, 30)),
    st.tuples(st.just("delete"), st.integers(0, WRITERS - 1), st.integers(0, 30)),
    st.tuples(st.just("commit"), st.integers(1, WRITERS - 1)),
    st.tuples(st.just("rollback"), st.integers(1, WRITERS - 1)),
]
steps = st.lists(
    st.one_of(
        *writer_steps,
        st.tuples(st.just("read"), st.integers(0, READERS - 1)),
    ),
    min_size=5,
    max_size=45,
)

# (filter list, owner or None for an operator) -- each reader follows one; the run's
# kind is always added so that runs sharing a database never see each other's rows.
Filters = list[dict[str, Any]]
SHAPES: list[tuple[Filters, str | None]] = [
    ([], "a"),
    ([{"column": "cancelled", "op": "eq", "value": False}], "a"),
    ([{"column": "progress", "op": "lt", "value": 0.5}], None),
    ([], None),
    ([{"column": "owner", "op": "in", "value": ["b"]}], None),
]
# The last reader follows the first one's shape, from offsets of its own.
shapes = st.lists(
    st.sampled_from(range(len(SHAPES))), min_size=READERS - 1, max_size=READERS - 1
).map(lambda chosen: [*chosen, chosen[0]])

# Random shapes: equality and range filters on the columns the writers change, for a
# user or an operator. (Ordering owners, which are text, is left to Postgres by the
# fan-out: it follows the database's collation. Single lowercase letters order the
# same under every collation, so the oracle may compare them in Python.)
a_filter = st.one_of(
    st.fixed_dictionaries(
        {
            "column": st.just("progress"),
            "op": st.sampled_from(["eq", "ne", "lt", "lte", "gt", "gte"]),
            "value": st.integers(0, 8).map(lambda k: k / 8),
        }
    ),
    st.fixed_dictionaries(
        {
            "column": st.just("cancelled"),
            "op": st.sampled_from(["eq", "ne"]),
            "value": st.booleans(),
        }
    ),
    st.fixed_dictionaries(
        {
            "column": st.just("owner"),
            "op": st.sampled_from(["eq", "ne", "gt", "lte"]),
            "value": st.sampled_from(OWNERS),
        }
    ),
    st.fixed_dictionaries(
        {
            "column": st.just("owner"),
            "op": st.just("in"),
            "value": st.lists(st.sampled_from(OWNERS), min_size=1, max_size=3, unique=True),
        }
    ),
)
random_shape = st.tuples(st.lists(a_filter, max_size=2), st.sampled_from([*OWNERS, None, None]))

_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "lt": operator.lt,
    "lte": operator.le,
    "gt": operator.gt,
    "gte": operator.ge,
    "in": lambda value, choices: value in choices,
}


def matches(filters: Filters, owner: str | None, version: Version) -> bool:
    """Whether a row version belongs to a shape (the oracle's own filter)."""
    row_owner, progress, cancelled, _ = version
    if owner is not None and row_owner != owner:
        return False
    values = {"owner": row_owner, "progress": progress, "cancelled": cancelled}
    return all(_OPS[f["op"]](values[f["column"]], f["value"]) for f in filters)


def version_of(row: dict[str, Any]) -> Version:
    """The compared part of a row as a shape delivers it."""
    return (row["owner"], float(row["progress"]), bool(row["cancelled"]), row["payload"]["v"])


@dataclass
class Writer:
    """One writing connection and the effects of its open transaction."""

    conn: psycopg.Connection[Any]
    txid: int | None = None
    effects: dict[str, Version | None] = field(default_factory=dict)
    locked: set[str] = field(default_factory=set)


@dataclass
class History:
    """The writers of one run, and every transaction committed, in commit order."""

    kind: str
    writers: list[Writer]
    committed: list[tuple[int, dict[str, Version | None]]] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    counter: int = 0

    def state_at(self, offset: Offset, filters: Filters, owner: str | None) -> State:
        """What a reader of the shape must hold at ``offset``."""
        state: dict[str, Version] = {}
        for txid, effects in self.committed:
            if offset.covers(txid):
                for key, version in effects.items():
                    if version is None:
                        state.pop(key, None)
                    else:
                        state[key] = version
        return {k: v for k, v in state.items() if matches(filters, owner, v)}

    def step(self, op: tuple[Any, ...]) -> None:
        """Run one writer step (reads are the caller's)."""
        action, w = op[0], self.writers[op[1]]
        if action == "commit":
            self.commit(w)
        elif action == "rollback":
            w.conn.rollback()
            self._reset(w)
        elif action == "insert":
            self._write(w, "insert", None, op[2])
        elif self.keys:
            key = self.keys[op[2] % len(self.keys)]
            if any(key in other.locked for other in self.writers if other is not w):
                return  # the row is locked by another open transaction: it would block
            self._write(w, action, key, op[3] if action == "progress" else None)

    def commit(self, w: Writer) -> None:
        """Commit a writer's transaction and record it."""
        w.conn.commit()
        if w.txid is not None:
            self.committed.append((w.txid, dict(w.effects)))
        self._reset(w)

    def _reset(self, w: Writer) -> None:
        w.txid, w.effects, w.locked = None, {}, set()

    def _write(self, w: Writer, action: str, key: str | None, arg: Any) -> None:
        self.counter += 1
        version = self.counter
        if action == "insert":
            key = str(uuid.uuid4())
            self.keys.append(key)
            sql = (
                "INSERT INTO background_jobs (id, kind, owner, payload) VALUES (%s, %s, %s, %s)"
                " RETURNING id::text, owner, progress, cancelled, payload"
            )
            params: tuple[Any, ...] = (key, self.kind, arg, Jsonb({"v": version}))
        elif action == "progress":
            sql = (
                "UPDATE background_jobs SET progress = %s, payload = %s WHERE id = %s"
                " RETURNING id::text, owner, progress, cancelled, payload"
            )
            params = (arg / 8, Jsonb({"v": version}), key)
        elif action == "cancel":
            sql = (
                "UPDATE background_jobs SET cancelled = true, payload = %s WHERE id = %s"
                " RETURNING id::text, owner, progress, cancelled, payload"
            )
            params = (Jsonb({"v": version}), key)
        else:
            sql = "DELETE FROM background_jobs WHERE id = %s RETURNING id::text"
            params = (key,)
        rows = w.conn.execute(sql, params).fetchall()
        if w.txid is None:
            w.txid = int(w.conn.execute("SELECT pg_current_xact_id()::text").fetchone()[0])
        for row in rows:
            w.locked.add(row[0])
            if action == "delete":
                w.effects[row[0]] = None
            else:
                owner, progress, cancelled, payload = row[1:]
                w.effects[row[0]] = (owner, float(progress), cancelled, payload["v"])


@dataclass
class Reader:
    """A client following one shape from offset to offset."""

    filters: Filters
    owner: str | None
    offset: str = "-1"
    state: State = field(default_factory=dict)
    seen: dict[str, int] = field(default_factory=dict)

    def apply(self, response: ShapeResponse, history: History) -> None:
        """Apply one answer; when it says up-to-date, check the state against the oracle."""
        for message in response.messages:
            if isinstance(message, UpsertMessage):
                version = version_of(message.row)
                # Never a row the reader may not see, nor one outside its shape.
                assert self.owner is None or version[0] == self.owner, message
                assert matches(self.filters, self.owner, version), (self.filters, message)
                # Versions of a row only move forward.
                assert version[3] >= self.seen.get(message.key, 0), message
                self.seen[message.key] = version[3]
                self.state[message.key] = version
            elif isinstance(message, DeleteMessage):
                self.state.pop(message.key, None)
        assert not response.must_refetch
        self.offset = response.offset
        if response.up_to_date:
            expected = history.state_at(Offset.decode(self.offset), self.filters, self.owner)
            assert self.state == expected, (self.offset, self.filters, self.owner)


def run(
    history: History,
    readers: list[Reader],
    ops: list[tuple[Any, ...]],
    read: Callable[[Reader], ShapeResponse],
) -> None:
    """Play the steps, then commit everything and let every reader catch up."""
    history.step(("insert", LONG_WRITER, "a"))  # the long transaction starts first
    for op in ops:
        if op[0] == "read":
            readers[op[1]].apply(read(readers[op[1]]), history)
        else:
            history.step(op)
    for w in history.writers[1:] + history.writers[:1]:  # the long one commits last
        history.commit(w)
    for reader in readers:
        response = read(reader)
        reader.apply(response, history)
        while not response.up_to_date:
            response = read(reader)
            reader.apply(response, history)


def table_state(conn: psycopg.Connection[Any], kind: str) -> dict[str, Version]:
    """The run's rows as they are in the table now."""
    rows = conn.execute(
        "SELECT id::text, owner, progress, cancelled, payload FROM background_jobs WHERE kind = %s",
        (kind,),
    ).fetchall()
    return {r[0]: (r[1], float(r[2]), r[3], r[4]["v"]) for r in rows}


def check_final_state(database_url: str, kind: str, readers: list[Reader]) -> None:
    """Every reader holds exactly the table's rows of its shape."""
    with psycopg.connect(database_url) as conn:
        table = table_state(conn, kind)
    for reader in readers:
        expected = {k: v for k, v in table.items() if matches(reader.filters, reader.owner, v)}
        assert reader.state == expected
