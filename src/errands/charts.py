"""The console's charts at any table size: jobs finished, queue depth, pickup latency and
run time over the last hour, day or week, in buckets, by kind or queue if asked.

They are read from per-minute rollups of ``job_events`` (``errands_chart_rollups``,
migration 0011), not from the events themselves: a week at 1,000,000 jobs is a few
thousand rollup rows instead of 3,000,000 events. :func:`roll_up_async` rolls up every
minute that is over (the service runs it in its maintenance and before each chart, so
no writer does any of this work); :func:`read_async` adds the minutes since on the fly,
so a chart is exact to the moment. Latency percentiles come from the rollups' log-scale
histograms (:data:`HISTOGRAM_BUCKETS` buckets a factor of √2 apart: within 19% of the
exact percentile). Queue depth is drawn back from the number of jobs waiting now through
each bucket's entries and exits.

The queries are in ``sql/charts.sql``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, LiteralString

from psycopg import sql
from psycopg.rows import dict_row

from errands.operations import AnyAsyncConnection
from errands.queries import query

CHART_QUERIES = "charts.sql"
KEPT = timedelta(days=8)
"""How long rollups are kept: the longest window (a week) and a day to spare."""
ROLL_UP_CHUNK = timedelta(hours=6)
"""Events rolled up per transaction when the rollups catch up (after an upgrade)."""
SETTLE = timedelta(minutes=1)
"""A minute is rolled up this long after it ends: an event is stamped with its
transaction's start, and one that commits later than this is left out of the charts."""
HISTOGRAM_BUCKETS = 48
PERCENTILES = (0.5, 0.95, 0.99)
SPLITS = ("kind", "queue")
ROLLUP_WIDTHS = (3600, 900, 60)
"""The rollups' widths in seconds, widest first: a chart reads the widest its bars are a
multiple of."""
_ORIGIN = datetime(2001, 1, 1, tzinfo=UTC)


def _q(name: str) -> LiteralString:
    return query(name, CHART_QUERIES)


def _with_minutes(name: str) -> sql.Composed:
    return sql.SQL(_q(name)).format(minutes=sql.SQL(_q("minutes")))


def _minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


async def roll_up_async(conn: AnyAsyncConnection) -> int:
    """Roll up every minute that is over and not rolled up yet (at most the last
    :data:`KEPT`), and forget rollups older than that; the number of minutes rolled
    up (0 if another roll-up is under way)."""
    done = 0
    while True:
        async with conn.transaction():
            locked = await (await conn.execute(_q("lock"))).fetchone()
            if not locked or not locked[0]:
                return done
            clock = await (await conn.execute(_q("clock"))).fetchone()
            assert clock is not None
            now, upto = clock
            until = _minute(now - SETTLE)
            start = max(upto or until - KEPT, _minute(now - KEPT))
            if start >= until:
                return done
            end = min(until, start + ROLL_UP_CHUNK)
            await conn.execute(_with_minutes("store"), {"events_from": start, "events_to": end})
            await conn.execute(_q("set_upto"), {"upto": end})
            await conn.execute(_q("forget"), {"before": now - KEPT})
            done += int((end - start).total_seconds() // 60)


def histogram_percentiles(histogram: list[int]) -> list[float] | None:
    """p50, p95 and p99 in seconds of a histogram of the rollups (None: it is empty):
    each is the geometric middle of the bucket it falls in."""
    total = sum(histogram)
    if not total:
        return None
    found = []
    for fraction in PERCENTILES:
        rank = max(1, math.ceil(fraction * total))
        seen = 0
        for bucket, count in enumerate(histogram):
            seen += count
            if seen >= rank:
                found.append(bucket_seconds(bucket))
                break
    return found


def bucket_seconds(bucket: int) -> float:
    """What a histogram bucket stands for: the geometric middle of its bounds (bucket 0
    holds up to 1 ms; the last, everything from about 2.3 hours)."""
    if bucket == 0:
        return 0.001
    return 0.001 * 2 ** ((bucket - 0.5) / 2)


def _add(a: list[int] | None, b: list[int] | None) -> list[int]:
    a = a or [0] * HISTOGRAM_BUCKETS
    b = b or [0] * HISTOGRAM_BUCKETS
    return [x + y for x, y in zip(a, b, strict=True)]


@dataclass
class Bucket:
    """One bucket of a chart: jobs that ended each way in it (``retried``: attempts that
    failed and went back to the queue), jobs waiting at its end, and the histograms of
    the pickups and runs of the attempts that started / ended in it."""

    minute: datetime
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    retried: int = 0
    queued: int = 0
    net: int = 0
    pickups: list[int] = field(default_factory=lambda: [0] * HISTOGRAM_BUCKETS)
    runs: list[int] = field(default_factory=lambda: [0] * HISTOGRAM_BUCKETS)

    def add(self, row: dict[str, Any]) -> None:
        """Add a row of the ``read`` query (or another bucket's figures)."""
        for name in ("completed", "failed", "cancelled", "retried", "net"):
            setattr(self, name, getattr(self, name) + int(row[name]))
        self.pickups = _add(self.pickups, row["pickups"])
        self.runs = _add(self.runs, row["runs"])


@dataclass
class Chart:
    """A window's buckets, oldest first: ``buckets`` for every job of the filter, and
    with a split, ``groups``: the same per kind or queue."""

    buckets: list[Bucket]
    groups: dict[str, list[Bucket]]


async def read_async(
    conn: AnyAsyncConnection,
    minutes: int,
    bucket: int,
    *,
    split: str | None = None,
    kind: str | None = None,
    queue: str | None = None,
) -> Chart:
    """The last ``minutes`` minutes in buckets of ``bucket`` seconds (a multiple of 60
    that divides the window), of one ``kind`` and/or ``queue`` if given, split by
    ``"kind"`` or ``"queue"`` if asked. The newest bucket is the one now falls in."""
    if split not in (None, *SPLITS):
        raise ValueError(f"split is one of {SPLITS}")
    clock = await (await conn.execute(_q("clock"))).fetchone()
    assert clock is not None
    now, upto = clock
    step = timedelta(seconds=bucket)
    current = _ORIGIN + (now - _ORIGIN) // step * step
    count = minutes * 60 // bucket
    since = current - (count - 1) * step
    upto = max(upto or since, since)
    width = next(w for w in ROLLUP_WIDTHS if bucket % w == 0)
    params = {
        "width": width,
        "since": since,
        "upto": upto,
        "events_from": upto,
        "events_to": now + timedelta(seconds=1),
        "bucket": bucket,
        "split": split,
        "kind": kind,
        "queue": queue,
    }
    groups: dict[str, list[Bucket]] = {}

    def series(name: str) -> list[Bucket]:
        if name not in groups:
            groups[name] = [Bucket(since + n * step) for n in range(count)]
        return groups[name]

    async with conn.cursor(row_factory=dict_row) as cursor:
        await cursor.execute(_with_minutes("read"), params)
        for row in await cursor.fetchall():
            index = (row["minute"] - since) // step
            if 0 <= index < count:
                series(row["group"])[index].add(row)
    waiting = await (await conn.execute(_q("depth_now"), params)).fetchall()
    depth_now = dict(waiting)
    for name in depth_now:
        series(name)
    total = [Bucket(since + n * step) for n in range(count)]
    for name, buckets in groups.items():
        queued = int(depth_now.get(name, 0))
        for index in reversed(range(count)):
            buckets[index].queued = max(0, queued)
            queued -= buckets[index].net
        for mine, all_ in zip(buckets, total, strict=True):
            all_.add(vars(mine))
            all_.queued += mine.queued
    return Chart(total, groups if split else {})


__all__ = [
    "HISTOGRAM_BUCKETS",
    "Bucket",
    "Chart",
    "bucket_seconds",
    "histogram_percentiles",
    "read_async",
    "roll_up_async",
]
