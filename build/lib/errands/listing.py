"""Jobs a page at a time, and counted per state, at any table size: what the console's
list reads, so that it is as fast with a million jobs as with ten.

A page is read on an index, newest first by ``received_at`` (the server's clock), from a
keyset cursor (the received_at and id of the last row seen), never with an OFFSET: the
thousandth page costs what the first does. A cursor is opaque text to callers.

Counts are exact up to :data:`COUNT_EXACT_UP_TO` jobs per state (a count that stops at
the cap, on the ``(state, received_at)`` index); past it the planner's estimate is
given and marked as one (:attr:`StateCounts.estimated`), because an exact count of a
million rows reads a million rows.

The queries are in ``sql/listing.sql``; the filter is :class:`errands.JobFilter`.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from psycopg.rows import class_row

from errands.jobs import STATES
from errands.operations import AnyAsyncConnection, AnyConnection, JobFilter, JobRecord, job_query

LISTING_QUERIES = "listing.sql"
PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
COUNT_EXACT_UP_TO = 50_000
"""Per state, counts up to this many jobs are exact; larger ones are estimates."""


class BadCursor(ValueError):
    """A cursor that no page of this listing gave out."""


def encode_cursor(job: JobRecord) -> str:
    """The cursor just past ``job`` in either direction."""
    text = f"{job.received_at.isoformat()}|{job.id}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """A cursor's received_at and id; :class:`BadCursor` if it is not one."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, job_id = text.split("|")
        received_at = datetime.fromisoformat(at)
        if received_at.tzinfo is None:
            raise ValueError("no time zone")
        return received_at, uuid.UUID(job_id)
    except (ValueError, UnicodeDecodeError, binascii.Error):
        raise BadCursor(f"{cursor[:40]!r} is not a cursor this list gave out") from None


@dataclass(frozen=True)
class Page:
    """One page of jobs, newest first, with the cursors of the pages on either side
    (None: there is none; ``newer`` None means this is the newest page)."""

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


def _page_params(
    where: JobFilter | None, after: str | None, before: str | None, limit: int
) -> tuple[str, dict[str, Any]]:
    if after and before:
        raise BadCursor("give after or before, not both")
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise ValueError(f"a page has 1 to {MAX_PAGE_SIZE} jobs")
    selection = where or JobFilter()
    one_state = selection.states[0] if len(selection.states) == 1 else None
    cursor = after or before
    at, job_id = decode_cursor(cursor) if cursor else (None, None)
    params = selection.params() | {
        "state": one_state,
        "cursor_at": at,
        "cursor_id": job_id,
        "limit": limit,
    }
    return ("page_newer" if before else "page_older"), params


def _page(rows: list[JobRecord], limit: int, *, newer_first: bool, from_cursor: bool) -> Page:
    more = len(rows) > limit
    rows = rows[:limit]
    if not newer_first:  # read oldest first, going towards the newest
        rows.reverse()
        newer_beyond, older_beyond = more, True
    else:
        newer_beyond, older_beyond = from_cursor, more
    if not rows:
        return Page([], None, None)
    return Page(
        rows,
        older=encode_cursor(rows[-1]) if older_beyond else None,
        newer=encode_cursor(rows[0]) if newer_beyond else None,
    )


def page(
    conn: AnyConnection,
    where: JobFilter | None = None,
    *,
    after: str | None = None,
    before: str | None = None,
    limit: int = PAGE_SIZE,
) -> Page:
    """The newest ``limit`` jobs matching ``where``; with ``after``, those older than
    that cursor; with ``before``, those newer than it."""
    name, params = _page_params(where, after, before, limit)
    with conn.cursor(row_factory=class_row(JobRecord)) as cur:
        rows = cur.execute(job_query(name, LISTING_QUERIES), params).fetchall()
    return _page(rows, limit, newer_first=before is None, from_cursor=after is not None)


async def page_async(
    conn: AnyAsyncConnection,
    where: JobFilter | None = None,
    *,
    after: str | None = None,
    before: str | None = None,
    limit: int = PAGE_SIZE,
) -> Page:
    """:func:`page` for an asyncio connection."""
    name, params = _page_params(where, after, before, limit)
    async with conn.cursor(row_factory=class_row(JobRecord)) as cur:
        await cur.execute(job_query(name, LISTING_QUERIES), params)
        rows = await cur.fetchall()
    return _page(rows, limit, newer_first=before is None, from_cursor=after is not None)


def _count_params(where: JobFilter | None, cap: int) -> dict[str, Any]:
    every_state = replace(where or JobFilter(), states=())
    return every_state.params() | {"cap": cap + 1, "all_states": list(STATES)}


def _estimate(plan: Any) -> int:
    return int(plan[0]["Plan"]["Plan Rows"])


def count_states(
    conn: AnyConnection, where: JobFilter | None = None, *, cap: int = COUNT_EXACT_UP_TO
) -> StateCounts:
    """Jobs matching ``where`` per state, whatever states ``where`` names (the console
    shows every state's count beside the chosen one): exact up to ``cap``, estimated
    past it."""
    params = _count_params(where, cap)
    counts = dict(conn.execute(job_query("count_states", LISTING_QUERIES), params).fetchall())
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
    cursor = await conn.execute(job_query("count_states", LISTING_QUERIES), params)
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
    "BadCursor",
    "Page",
    "StateCounts",
    "count_states",
    "count_states_async",
    "page",
    "page_async",
]
