"""Jobs a page at a time, and counted per state, at any table size: what the console's
list reads, so that it is as fast with a million jobs as with ten.

A page is read on an index, newest first by ``received_at`` (the server's clock), from a
keyset cursor (the received_at and id of the last row seen), never with an OFFSET: the
thousandth page costs what the first does. A cursor is opaque text to callers.

Counts are exact up to :data:`COUNT_EXACT_UP_TO` jobs per state (a count that stops at
the cap, on the index that holds the state); past it the planner's estimate is
given and marked as one (:attr:`StateCounts.estimated`), because an exact count of a
million rows reads a million rows.

The queries are in ``sql/listing.sql``; the filter is :class:`errands.JobFilter`.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import cache, partial
from typing import Any, LiteralString

from psycopg import sql
from psycopg.rows import class_row

from errands.jobs import STATES
from errands.operations import (
    AnyAsyncConnection,
    AnyConnection,
    JobFilter,
    JobRecord,
    job_columns,
    job_query,
    job_selection,
)
from errands.queries import query

LISTING_QUERIES = "listing.sql"
PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
COUNT_EXACT_UP_TO = 50_000
"""Per state, counts up to this many jobs are exact; larger ones are estimates."""


class BadCursor(ValueError):
    """A cursor that no page of this listing gave out, or one of another sort."""


@dataclass(frozen=True)
class SortKey:
    """How a sort orders jobs: by ``columns`` (SQL on ``background_jobs j``, written
    here, never taken from a request), then received_at and id, which make every
    position unique. ``only`` is the condition a job needs to have the key (a run time
    needs a start and an end)."""

    columns: tuple[LiteralString, ...]
    types: tuple[LiteralString, ...]
    only: LiteralString = "true"


# Each key is served by an index that walks it in order (sql/migrations/0008 and 0011
# say which), so a page costs the same at any depth; see docs/operators.md.
SORTS: dict[str, SortKey] = {
    "received": SortKey(("j.received_at", "j.id"), ("timestamptz", "uuid")),
    "state": SortKey(("j.state", "j.received_at", "j.id"), ("text", "timestamptz", "uuid")),
    "kind": SortKey(("j.kind", "j.received_at", "j.id"), ("text", "timestamptz", "uuid")),
    "queue": SortKey(("j.queue", "j.received_at", "j.id"), ("text", "timestamptz", "uuid")),
    "run_time": SortKey(
        ("(j.finished_at - j.started_at)", "j.received_at", "j.id"),
        ("interval", "timestamptz", "uuid"),
        "j.finished_at IS NOT NULL AND j.started_at IS NOT NULL",
    ),
}
"""The orders a page can be read in: newest first (``received``), or by state, kind,
queue or run time (jobs that ran to an end only), each either way."""


@dataclass(frozen=True)
class Sort:
    """A page's order: a key of :data:`SORTS`, descending or ascending. Ties are broken
    by received_at and id in the same direction (by kind ascending: kinds A to Z, each
    kind's jobs oldest first; descending: Z to A, newest first)."""

    key: str = "received"
    descending: bool = True

    def __post_init__(self) -> None:
        if self.key not in SORTS:
            raise ValueError(f"unknown sort {self.key!r}; sorts are {', '.join(SORTS)}")

    @property
    def name(self) -> str:
        """``kind`` ascending, ``-kind`` descending, as the API's ``sort`` takes it."""
        return f"-{self.key}" if self.descending else self.key

    @classmethod
    def parse(cls, text: str) -> Sort:
        """``-run_time`` is run time descending; ValueError for an unknown key."""
        return cls(text.removeprefix("-"), text.startswith("-"))


NEWEST_FIRST = Sort()


def _sort_values(job: JobRecord, sort: Sort) -> list[Any]:
    if sort.key == "received":
        return []
    if sort.key == "run_time":
        assert job.finished_at is not None
        assert job.started_at is not None
        return [(job.finished_at - job.started_at).total_seconds()]
    return [getattr(job, sort.key)]


def encode_cursor(job: JobRecord, sort: Sort = NEWEST_FIRST) -> str:
    """The cursor just past ``job`` in either direction of ``sort``. The console builds
    the newest-first one itself (jobs.js ``olderThan``) for rows that arrived live: a
    change of this format changes that too."""
    values = [sort.name, *_sort_values(job, sort), job.received_at.isoformat(), str(job.id)]
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, sort: Sort = NEWEST_FIRST) -> list[Any]:
    """A cursor's values (the sort key's, received_at and id) as query parameters;
    :class:`BadCursor` if it is not one, or not one of ``sort``."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        name, *values = json.loads(text)
        key_values, at, job_id = values[:-2], values[-2], values[-1]
        received_at = datetime.fromisoformat(at)
        if received_at.tzinfo is None or len(key_values) > 1:
            raise ValueError("not a cursor")
        if name.removeprefix("-") == "run_time":
            key_values = [timedelta(seconds=float(key_values[0]))]
        elif key_values and not isinstance(key_values[0], str):
            raise ValueError("not a text key")
        decoded = [*key_values, received_at, uuid.UUID(job_id)]
    except (ValueError, TypeError, IndexError, UnicodeDecodeError, binascii.Error, AttributeError):
        raise BadCursor(f"{cursor[:40]!r} is not a cursor this list gave out") from None
    if name != sort.name or len(decoded) != len(SORTS[sort.key].types):
        raise BadCursor(f"this cursor is of the sort {name!r}, not {sort.name!r}")
    return decoded


@dataclass(frozen=True)
class Page:
    """One page of jobs in the sort's order, with the cursors of the pages on either
    side (None: there is none). ``older`` is the next page along the order (for the
    default sort, newest first, older jobs) and ``newer`` the one before it; ``newer``
    None means this is the first page."""

    jobs: list[JobRecord]
    older: str | None
    newer: str | None


@dataclass(frozen=True)
class StateCounts:
    """Jobs per state (every state listed); the states in ``estimated`` have more than
    :data:`COUNT_EXACT_UP_TO` jobs and their number is the planner's estimate."""

    counts: dict[str, int]
    estimated: list[str]

    @property
    def total(self) -> int:
        """Jobs in every state (an estimate if any count is one)."""
        return sum(self.counts.values())


@cache
def _page_query(sort: Sort, forward: bool, from_cursor: bool) -> sql.Composed:
    """The page query of ``sort``, read along it (``forward``) or back from a cursor."""
    key = SORTS[sort.key]
    descending = sort.descending == forward
    columns = [sql.SQL(column) for column in key.columns]  # constants of SORTS
    direction = sql.SQL(" DESC" if descending else "")
    cursor: sql.Composable = sql.SQL("true")
    if from_cursor:
        values = sql.SQL(", ").join(
            sql.SQL("{}::{}").format(sql.Placeholder(f"k{n}"), sql.SQL(kind))
            for n, kind in enumerate(key.types)
        )
        compare = sql.SQL("<" if descending else ">")
        cursor = sql.SQL("({}) {} ({})").format(sql.SQL(", ").join(columns), compare, values)
    template = sql.SQL(query("page", LISTING_QUERIES))
    return template.format(
        columns=job_columns(),
        selection=job_selection(),
        only=sql.SQL(key.only),
        cursor=cursor,
        order=sql.SQL(", ").join(column + direction for column in columns),
    )


def _page_params(
    where: JobFilter | None, sort: Sort, after: str | None, before: str | None, limit: int
) -> tuple[sql.Composed, dict[str, Any], Callable[[list[JobRecord]], Page]]:
    """The page's query, its parameters, and what makes the page of its rows. An empty
    cursor (``?before=``) is no cursor."""
    if after and before:
        raise BadCursor("give after or before, not both")
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise ValueError(f"a page has 1 to {MAX_PAGE_SIZE} jobs")
    selection = where or JobFilter()
    one_state = selection.states[0] if len(selection.states) == 1 else None
    cursor = after or before
    values = decode_cursor(cursor, sort) if cursor else []
    params = selection.params() | {"state": one_state, "limit": limit}
    params |= {f"k{n}": value for n, value in enumerate(values)}
    forward = not before
    finish = partial(_page, limit=limit, sort=sort, forward=forward, from_cursor=bool(after))
    return _page_query(sort, forward, bool(cursor)), params, finish


def _page(
    rows: list[JobRecord], *, limit: int, sort: Sort, forward: bool, from_cursor: bool
) -> Page:
    more = len(rows) > limit
    rows = rows[:limit]
    if not forward:  # read back from the cursor: turn it round
        rows.reverse()
        before_beyond, after_beyond = more, True
    else:
        before_beyond, after_beyond = from_cursor, more
    if not rows:
        return Page([], None, None)
    return Page(
        rows,
        older=encode_cursor(rows[-1], sort) if after_beyond else None,
        newer=encode_cursor(rows[0], sort) if before_beyond else None,
    )


def page(
    conn: AnyConnection,
    where: JobFilter | None = None,
    *,
    sort: Sort = NEWEST_FIRST,
    after: str | None = None,
    before: str | None = None,
    limit: int = PAGE_SIZE,
) -> Page:
    """The first ``limit`` jobs matching ``where`` in the order of ``sort`` (newest
    first unless it says otherwise); with ``after``, those past that cursor; with
    ``before``, those before it."""
    statement, params, finish = _page_params(where, sort, after, before, limit)
    with conn.cursor(row_factory=class_row(JobRecord)) as cur:
        return finish(cur.execute(statement, params).fetchall())


async def page_async(
    conn: AnyAsyncConnection,
    where: JobFilter | None = None,
    *,
    sort: Sort = NEWEST_FIRST,
    after: str | None = None,
    before: str | None = None,
    limit: int = PAGE_SIZE,
) -> Page:
    """:func:`page` for an asyncio connection."""
    statement, params, finish = _page_params(where, sort, after, before, limit)
    async with conn.cursor(row_factory=class_row(JobRecord)) as cur:
        await cur.execute(statement, params)
        return finish(await cur.fetchall())


def _count_params(where: JobFilter | None, cap: int) -> dict[str, Any]:
    every_state = replace(where or JobFilter(), states=())
    return every_state.params() | {"cap": cap + 1}


@cache
def _count_query() -> sql.Composed:
    """Every state's capped count in one statement: ``count_state`` once per state,
    each with its state written in, so that each is planned on that state's index (a
    state given as a parameter would hide which partial index holds it)."""
    template = sql.SQL(query("count_state", LISTING_QUERIES))
    return sql.SQL(" UNION ALL ").join(
        template.format(state=sql.Literal(state), selection=job_selection()) for state in STATES
    )


def _estimate(plan: Any) -> int:
    return int(plan[0]["Plan"]["Plan Rows"])


def count_states(
    conn: AnyConnection, where: JobFilter | None = None, *, cap: int = COUNT_EXACT_UP_TO
) -> StateCounts:
    """Jobs matching ``where`` per state, whatever states ``where`` names (the console
    shows every state's count beside the chosen one): exact up to ``cap``, estimated
    past it."""
    params = _count_params(where, cap)
    counts = dict(conn.execute(_count_query(), params).fetchall())
    estimated = [state for state in STATES if counts[state] > cap]
    for state in estimated:
        row = conn.execute(
            job_query("estimate_state", LISTING_QUERIES), params | {"state": state}
        ).fetchone()
        counts[state] = max(cap + 1, _estimate(row[0] if row else None))
    return StateCounts(counts, estimated)


async def count_states_async(
    conn: AnyAsyncConnection, where: JobFilter | None = None, *, cap: int = COUNT_EXACT_UP_TO
) -> StateCounts:
    """:func:`count_states` for an asyncio connection."""
    params = _count_params(where, cap)
    cursor = await conn.execute(_count_query(), params)
    counts = dict(await cursor.fetchall())
    estimated = [state for state in STATES if counts[state] > cap]
    for state in estimated:
        plan = await conn.execute(
            job_query("estimate_state", LISTING_QUERIES), params | {"state": state}
        )
        row = await plan.fetchone()
        counts[state] = max(cap + 1, _estimate(row[0] if row else None))
    return StateCounts(counts, estimated)


__all__ = [
    "COUNT_EXACT_UP_TO",
    "NEWEST_FIRST",
    "SORTS",
    "BadCursor",
    "Page",
    "Sort",
    "SortKey",
    "StateCounts",
    "count_states",
    "count_states_async",
    "page",
    "page_async",
]
