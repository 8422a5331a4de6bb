"""Periodic jobs: each tick is exactly one job however many workers run; the missed
ticks policy; ``errands schedules``."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

import errands
from errands.schedules import Schedule, enqueue_tick
from tests.helpers import wait_for
from tests.worker.conftest import StartWorker

registry = errands.Registry()
REGISTRY = "tests.worker.test_periodic:registry"


@registry.periodic("* * * * *", payload={"every": "minute"})
@registry.job("tick")
def tick(ctx: errands.JobContext, payload: Any) -> Any:
    return payload


registry.periodic("0 3 * * *", kind="tick", name="nightly", timezone="Europe/Riga")


def test_schedules_are_registered() -> None:
    assert [(s.name, s.cron, s.kind) for s in registry.schedules] == [
        ("nightly", "0 3 * * *", "tick"),
        ("tick * * * * *", "* * * * *", "tick"),
    ]


@pytest.mark.parametrize(
    ("cron", "zone", "problem"),
    [
        ("61 * * * *", "UTC", "bad cron"),
        ("* * *", "UTC", "bad cron"),
        ("* * * * *", "Mars/Base", "time zone"),
    ],
)
def test_bad_schedules_are_refused(cron: str, zone: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        Schedule("s", cron, "tick", timezone=zone)


def test_ticks_in_a_time_zone() -> None:
    nightly = Schedule("n", "0 3 * * *", "tick", timezone="Europe/Riga")
    winter = datetime(2026, 1, 10, 12, tzinfo=UTC)
    summer = datetime(2026, 7, 10, 12, tzinfo=UTC)
    assert nightly.next_after(winter) == datetime(2026, 1, 11, 1, tzinfo=UTC)
    assert nightly.next_after(summer) == datetime(2026, 7, 11, 0, tzinfo=UTC)
    assert nightly.latest_due(winter) == datetime(2026, 1, 10, 1, tzinfo=UTC)


def test_racing_workers_enqueue_a_tick_once(database_url: str) -> None:
    schedule = Schedule("race", "* * * * *", "tick")
    moment = datetime(2026, 1, 1, 0, 5, tzinfo=UTC)

    async def one() -> Any:
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            return await enqueue_tick(conn, schedule, moment)

    async def race() -> list[Any]:
        return await asyncio.gather(*(one() for _ in range(8)))

    enqueued = [job_id for job_id in asyncio.run(race()) if job_id is not None]
    assert len(enqueued) == 1
    with psycopg.connect(database_url) as conn:
        late = asyncio.run(_older_tick(database_url, schedule, moment - timedelta(minutes=1)))
        assert late is None  # older than the recorded tick: skipped
        rows = conn.execute("SELECT count(*) FROM background_jobs WHERE kind = 'tick'").fetchone()
    assert rows == (1,)


async def _older_tick(database_url: str, schedule: Schedule, moment: datetime) -> Any:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        return await enqueue_tick(conn, schedule, moment)


def test_three_workers_catch_up_a_missed_tick_once(
    start_worker: StartWorker, conn: psycopg.Connection[Any]
) -> None:
    """The schedule last ran 5 minutes ago; no worker ran since. Three workers start:
    the latest missed tick becomes one job, the earlier ones none."""
    every_minute = registry.schedules[1]
    last = every_minute.latest_due(datetime.now(UTC)) - timedelta(minutes=5)
    conn.execute(
        "INSERT INTO errands_schedule_ticks (schedule, tick, job_id)"
        " VALUES (%s, %s, gen_random_uuid())",
        (every_minute.name, last),
    )
    for _ in range(3):
        start_worker(registry=REGISTRY)

    def completed() -> list[tuple[Any, ...]] | None:
        rows = conn.execute(
            "SELECT t.tick, j.state, j.payload FROM errands_schedule_ticks t"
            " JOIN background_jobs j ON j.id = t.job_id WHERE t.schedule = %s",
            (every_minute.name,),
        ).fetchall()
        return rows if rows and all(r[1] == "completed" for r in rows) else None

    rows = wait_for(completed, 30, what="the catch-up job to run")
    due = every_minute.latest_due(datetime.now(UTC))
    ticks = sorted(r[0] for r in rows)
    # One job for the latest missed tick (and, if a minute turned meanwhile, one for it).
    assert ticks[0] >= last + timedelta(minutes=4)
    assert ticks[-1] <= due
    assert len(ticks) == len(set(ticks)) <= 2
    assert all(r[2] == {"every": "minute"} for r in rows)
    jobs = conn.execute("SELECT count(*) FROM background_jobs WHERE kind = 'tick'").fetchone()
    assert jobs == (len(ticks),)


def test_schedules_command_prints_each_schedule() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "errands", "schedules", REGISTRY],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "nightly" in done.stdout
    assert "Every minute" in done.stdout
    next_minute = Schedule("m", "* * * * *", "tick").next_after(datetime.now(UTC))
    assert next_minute.strftime("%H:%M") in done.stdout


def test_periodic_needs_a_kind() -> None:
    other = errands.Registry()
    with pytest.raises(ValueError, match="kind="):
        other.periodic("* * * * *")(lambda ctx, payload: None)
    other.periodic("* * * * *", kind="a")
    with pytest.raises(ValueError, match="name="):
        other.periodic("* * * * *", kind="a")
    with pytest.raises(errands.PayloadError):
        other.periodic("* * * * *", kind="b", payload={"when": object()})
