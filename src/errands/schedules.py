"""Periodic jobs: cron schedules whose every tick becomes exactly one ordinary job.

Every worker whose registry has schedules runs :func:`run_schedules`. No worker is a
leader: each one, at each tick, tries to record the tick in ``errands_schedule_ticks``
and to insert its job in the same statement, and the table's primary key on
``(schedule, tick)`` lets exactly one of them in, however many run and whatever their
clocks say. A tick older than one already recorded is skipped, so a worker that lags
never enqueues a stale tick after a newer one.

**Missed ticks.** Ticks that fall while no worker runs are not replayed one by one:
when a worker starts (or wakes from a suspended machine), the schedule's *latest*
missed tick becomes one job, late, and the earlier ones are skipped, like anacron does.
A schedule that never ran before starts with its next tick. The schedule's newest
recorded tick is where it resumes, so renaming a schedule starts it afresh.

Cron expressions are read by `cronsim <https://pypi.org/project/cronsim/>`_ (the
parser of Healthchecks.io): five fields, ``L``, ``W`` and ``#`` included.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import psycopg
from cronsim import CronSim, CronSimError

from errands.backoff import Backoff, Retries
from errands.connector import connector
from errands.ids import uuid7
from errands.payloads import dump_json
from errands.queries import query

log = logging.getLogger("errands.schedules")

MAX_SLEEP = 60.0
"""The longest the scheduler sleeps between two looks at the clock (it also notices a
suspended machine waking up)."""
RECONNECT = Backoff(first=0.5, cap=5.0)
"""Waits between attempts to reach the database again after an error (the one retry
policy, :mod:`errands.backoff`)."""


@dataclass(frozen=True)
class Schedule:
    """A cron expression, and the job each of its ticks enqueues."""

    name: str
    cron: str
    kind: str
    payload: Any = None
    timezone: str = "UTC"

    def __post_init__(self) -> None:
        try:
            zone = ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {self.timezone!r} (use an IANA name)") from None
        try:
            CronSim(self.cron, datetime.now(zone))
        except CronSimError as exc:
            raise ValueError(f"bad cron expression {self.cron!r}: {exc}") from None
        dump_json({} if self.payload is None else self.payload)  # fail now, not at a tick

    @property
    def zone(self) -> ZoneInfo:
        """The time zone the expression is read in."""
        return ZoneInfo(self.timezone)

    def next_after(self, moment: datetime) -> datetime:
        """The first tick strictly after ``moment``, in UTC."""
        tick: datetime = next(CronSim(self.cron, moment.astimezone(self.zone)))
        return tick.astimezone(UTC)

    def latest_due(self, now: datetime) -> datetime:
        """The newest tick at or before ``now``, in UTC."""
        # cronsim's reverse walk yields ticks strictly before its start (to the second):
        # start a second late, and step back over a tick that is not yet due.
        ticks = CronSim(self.cron, (now + timedelta(seconds=1)).astimezone(self.zone), True)
        tick: datetime = next(ticks)
        if tick > now:
            tick = next(ticks)
        return tick.astimezone(UTC)

    def describe(self) -> str:
        """The expression in words ("Every fifth minute of every hour")."""
        return str(CronSim(self.cron, datetime.now(self.zone)).explain())


def _now() -> datetime:
    return datetime.now(UTC)


async def enqueue_tick(
    conn: psycopg.AsyncConnection[Any], schedule: Schedule, tick: datetime
) -> Any | None:
    """Record ``tick`` of ``schedule`` and insert its job, unless a worker already did
    (or a newer tick is recorded); return the new job's id, or None."""
    cur = await conn.execute(
        query("enqueue_tick"),
        {
            "schedule": schedule.name,
            "tick": tick,
            "id": uuid7(),
            "kind": schedule.kind,
            "payload": dump_json({} if schedule.payload is None else schedule.payload),
        },
    )
    row = await cur.fetchone()
    return None if row is None else row[0]


async def declare(conn: psycopg.AsyncConnection[Any], schedules: Sequence[Schedule]) -> None:
    """Write ``schedules`` where operators read them (``errands_schedules``): the
    console shows each one's next run from there."""
    await conn.execute(
        query("declare_schedules"),
        {
            "names": [s.name for s in schedules],
            "crons": [s.cron for s in schedules],
            "zones": [s.timezone for s in schedules],
            "kinds": [s.kind for s in schedules],
        },
    )


async def last_ticks(
    conn: psycopg.AsyncConnection[Any], schedules: Sequence[Schedule]
) -> dict[str, datetime]:
    """The newest recorded tick of each schedule that has one."""
    cur = await conn.execute(query("last_ticks"), {"schedules": [s.name for s in schedules]})
    return dict(await cur.fetchall())


async def run_schedules(
    database_url: str,
    schedules: Sequence[Schedule],
    *,
    clock: Callable[[], datetime] = _now,
    max_sleep: float = MAX_SLEEP,
) -> None:
    """Enqueue the jobs of ``schedules`` at their ticks, until cancelled.

    Uses one connection of its own to ``database_url``, and rides out database outages
    (a tick that falls during one is enqueued late, once, when the database is back).
    Returns at once when there are no schedules. ``clock`` (aware datetimes) is for tests.
    """
    if not schedules:
        return
    cursors: dict[str, datetime] = {}  # per schedule: every tick up to here is settled
    retries = Retries(RECONNECT)
    while True:
        try:
            async with await connector().connect_async(database_url, autocommit=True) as conn:
                if not cursors:
                    await declare(conn, schedules)
                    recorded = await last_ticks(conn, schedules)
                    started = clock()
                    cursors = {s.name: recorded.get(s.name, started) for s in schedules}
                retries.succeeded()
                while True:
                    await _enqueue_due(conn, schedules, cursors, clock())
                    now = clock()
                    wake = min(s.next_after(cursors[s.name]) for s in schedules)
                    await asyncio.sleep(min(max_sleep, max(0.0, (wake - now).total_seconds())))
        except psycopg.Error as exc:
            log.warning("schedules: the database failed (%s); retrying", exc)
            await asyncio.sleep(retries.failed())


async def _enqueue_due(
    conn: psycopg.AsyncConnection[Any],
    schedules: Sequence[Schedule],
    cursors: dict[str, datetime],
    now: datetime,
) -> None:
    for schedule in schedules:
        tick = schedule.latest_due(now)
        if tick <= cursors[schedule.name]:
            continue
        job_id = await enqueue_tick(conn, schedule, tick)
        cursors[schedule.name] = tick
        if job_id is not None:
            log.info("schedule %r: tick %s enqueued as job %s", schedule.name, tick, job_id)
