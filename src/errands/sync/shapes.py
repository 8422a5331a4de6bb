"""Reading a shape: its snapshot, page by page, then the changes since an offset.

Change capture (docs/design.md, "Change capture"; docs/sync.md): every row version
carries ``_txid``, the transaction that wrote it; an offset is the
``pg_current_snapshot()`` of the read that produced it. The changes since offset ``O``
are the row versions and tombstones with ``_txid >= xmin(O) AND NOT
pg_visible_in_snapshot(_txid, O)``, read in one repeatable-read transaction that also
takes the new snapshot. Each read thus brings the reader from the state at ``O`` to
exactly the state at the new snapshot, whatever order transactions
commit in, and a long-running transaction only widens the scan.

A snapshot larger than a page is read in pages ordered by key. Every page after the
first is read at a newer snapshot, so the offset of a page keeps the first page's
snapshot ``S`` (plus the last key sent); the last page also carries every change since
``S``, which makes the whole a consistent state at the last page's snapshot.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from psycopg import AsyncConnection, IsolationLevel, sql
from psycopg.errors import DataError

from errands.protocol import (
    JOB_COLUMNS,
    JOBS_TABLE,
    START,
    ControlMessage,
    DeleteMessage,
    ErrorCode,
    Filter,
    Message,
    Offset,
    ShapeResponse,
    UpsertMessage,
)
from errands.queries import query
from errands.sync.errors import BadRequest, MustRefetch, NotFound
from errands.sync.filters import compile_filters, confined_keys

SYNC_QUERIES = "sync.sql"
SYNCED_TABLES = frozenset({JOBS_TABLE})

# A failed job's traceback (the worker's file paths and source lines) is for operators,
# who read it from the table (console, CLI); a shape carries the error's type and message.
# waiting_for counts a pending question (ctx.ask) too; a client is told the jobs only.
_SYNCED_VALUES = {
    "error": sql.SQL(
        "CASE WHEN jsonb_typeof(error) = 'object' THEN error - 'traceback' ELSE error END"
    ),
    "waiting_for": sql.SQL(
        "greatest(waiting_for - (question IS NOT NULL AND answer IS NULL)::integer, 0)"
    ),
}

# The row as JSON, built by Postgres from the whitelist: uuid and timestamptz become
# strings (ISO 8601, in the session's UTC), jsonb stays JSON. Shared by the change log.
ROW_JSON = sql.SQL("jsonb_build_object({})").format(
    sql.SQL(", ").join(
        sql.SQL("{}, {}").format(sql.Literal(c), _SYNCED_VALUES.get(c, sql.Identifier(c)))
        for c in JOB_COLUMNS
    )
)


@dataclass(frozen=True)
class Shape:
    """A table, the client's filters and the caller's permission (the owner it may see,
    or None for an operator). Equal shapes are served by the same queries."""

    table: str
    filters: tuple[Filter, ...] = ()
    owner: str | None = None
    key: str = field(init=False, compare=False)

    def __post_init__(self) -> None:
        if self.table not in SYNCED_TABLES:
            raise NotFound(
                f"unknown table {self.table[:80]!r}; synced tables: {', '.join(SYNCED_TABLES)}",
                ErrorCode.UNKNOWN_TABLE,
            )
        filters = [f.model_dump(mode="json") for f in self.filters]
        key = json.dumps([self.table, self.owner, filters], sort_keys=True)
        object.__setattr__(self, "key", key)
        # Compile now, so that a bad filter fails before any query runs.
        compile_filters(self.filters)

    @cached_property
    def confined(self) -> frozenset[str] | None:
        """The only keys this shape can ever hold (its id filters), or None: any."""
        return confined_keys(self.filters)

    def compose(self, name: str) -> tuple[sql.Composed, dict[str, Any]]:
        """The named query template with this shape's filter and permission filled in."""
        condition, params = compile_filters(self.filters)
        if self.owner is None:
            permission: sql.Composable = sql.SQL("true")
        else:
            permission = sql.SQL("owner = {}").format(sql.Placeholder("owner"))
            params["owner"] = self.owner
        template = sql.SQL(query(name, SYNC_QUERIES))
        return template.format(row=ROW_JSON, permission=permission, shape_filter=condition), params


@dataclass(frozen=True)
class Position:
    """Where the database is as a read sees it."""

    generation: str
    pruned_below: int
    snapshot: Offset


def parse_offset(text: str) -> Offset | None:
    """The offset a client sent (None for the start); :class:`BadRequest` if garbage."""
    if text == START:
        return None
    try:
        offset = Offset.decode(text)
        if offset.after_key is not None:
            uuid.UUID(offset.after_key)
    except ValueError:
        raise BadRequest(
            f"not an offset: {text[:80]!r}; send -1 or an offset the service returned",
            ErrorCode.BAD_OFFSET,
        ) from None
    return offset


def snapshot_offset(generation: str, snapshot: str) -> Offset:
    """An offset from ``pg_current_snapshot()::text`` (``xmin:xmax:xip,xip``)."""
    xmin, xmax, xip = snapshot.split(":")
    xips = tuple(int(x) for x in xip.split(",")) if xip else ()
    return Offset(generation, int(xmin), int(xmax), xips)


def pg_snapshot(offset: Offset) -> str:
    """The offset's snapshot in Postgres's text form."""
    return f"{offset.xmin}:{offset.xmax}:{','.join(str(x) for x in offset.xips_sorted)}"


def check_offset(offset: Offset, position: Position) -> None:
    """:class:`MustRefetch` unless the changes since ``offset`` can be read exactly."""
    if offset.generation != position.generation:
        raise MustRefetch("the offset is from another database generation")
    # Tombstones of transactions below the horizon are gone: the offset must already
    # see every one of those transactions.
    horizon = position.pruned_below
    if offset.xmax < horizon or any(x < horizon for x in offset.xip):
        raise MustRefetch("the offset is older than the retention horizon")
    if offset.xmax > position.snapshot.xmax:
        raise MustRefetch("the offset is ahead of the database (was it restored?)")


async def read_shape(
    conn: AsyncConnection[Any], shape: Shape, offset: Offset | None, page_size: int
) -> ShapeResponse:
    """One answer for ``shape`` from ``offset`` (None: the start), read in one
    repeatable-read transaction on ``conn`` (an autocommit connection)."""
    async with _read_transaction(conn):
        position = await _read_position(conn)
        if offset is None:
            return await _snapshot_page(conn, shape, position, None, page_size)
        check_offset(offset, position)
        if offset.after_key is not None:
            return await _snapshot_page(conn, shape, position, offset, page_size)
        messages = await _changes(conn, shape, offset)
        return _up_to_date(messages, position.snapshot)


@contextlib.asynccontextmanager
async def _read_transaction(conn: AsyncConnection[Any]) -> AsyncIterator[None]:
    await conn.set_isolation_level(IsolationLevel.REPEATABLE_READ)
    await conn.set_read_only(True)
    try:
        async with conn.transaction():
            yield
    except DataError as exc:
        # A filter value Postgres cannot take (e.g. out of the column type's range).
        raise BadRequest(
            f"a filter value is out of range: {exc.diag.message_primary}",
            ErrorCode.VALIDATION_ERROR,
        ) from None


async def _read_position(conn: AsyncConnection[Any]) -> Position:
    cursor = await conn.execute(query("read_position", SYNC_QUERIES))
    row = await cursor.fetchone()
    assert row is not None, "errands_sync_state is empty: run errands migrate"
    generation, pruned_below, snapshot = row
    return Position(generation, int(pruned_below), snapshot_offset(generation, snapshot))


async def _snapshot_page(
    conn: AsyncConnection[Any],
    shape: Shape,
    position: Position,
    paging: Offset | None,
    page_size: int,
) -> ShapeResponse:
    statement, params = shape.compose("snapshot_page")
    params |= {"after": paging.after_key if paging else None, "limit": page_size + 1}
    rows = await (await conn.execute(statement, params)).fetchall()
    messages: list[Message] = [UpsertMessage(key=key, row=row) for key, row in rows[:page_size]]
    first = paging or position.snapshot
    if len(rows) > page_size:
        cursor = Offset(first.generation, first.xmin, first.xmax, first.xip, rows[page_size - 1][0])
        return ShapeResponse(messages=messages, offset=cursor.encode())
    if paging is not None:
        # The earlier pages were read at older snapshots: catch up with what changed.
        since = Offset(paging.generation, paging.xmin, paging.xmax, paging.xip)
        changes = await _changes(conn, shape, since)
        messages = _unique_keys(messages + changes)
    return _up_to_date(messages, position.snapshot)


async def _changes(conn: AsyncConnection[Any], shape: Shape, offset: Offset) -> list[Message]:
    """The messages since ``offset``: the newest state of each row it cannot see."""
    statement, params = shape.compose("changes")
    params |= {"xmin": str(offset.xmin), "since": pg_snapshot(offset)}
    rows = await (await conn.execute(statement, params)).fetchall()
    current = {key for key, _, row, _ in rows if row is not None}
    return _changes_since(offset, rows, current, shape.confined)


def _changes_since(
    offset: Offset, rows: list[Any], current: set[str], confined: frozenset[str] | None
) -> list[Message]:
    messages: list[Message] = []
    for key, in_shape, row, txid in rows:
        if offset.covers(int(txid)):
            continue  # the reader has this version already
        if confined is not None and key not in confined:
            continue  # never in the shape (routing.confined_keys)
        if in_shape:
            messages.append(UpsertMessage(key=key, row=row))
        elif row is not None or key not in current:
            # Left the shape, or deleted (and not inserted again since).
            messages.append(DeleteMessage(key=key))
    return _unique_keys(messages)


def _unique_keys(messages: Sequence[Message]) -> list[Message]:
    """One message per key; a row deleted twice in the window gives one delete."""
    seen: dict[str, Message] = {}
    for message in messages:
        assert not isinstance(message, ControlMessage)
        seen.setdefault(message.key, message)
    return list(seen.values())


def _up_to_date(messages: list[Message], snapshot: Offset) -> ShapeResponse:
    messages.append(ControlMessage(type="up-to-date"))
    return ShapeResponse(messages=messages, offset=snapshot.encode())
