"""The console's periodic schedules: each one a worker declared, with its expression,
last run and next run (GET /v1/admin/schedules and the Queues view)."""

from __future__ import annotations

import asyncio
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
from playwright.sync_api import Page, expect

from errands.schedules import Schedule, declare, enqueue_tick


def declare_and_tick(url: str, schedules: list[Schedule], tick: Schedule | None) -> None:
    async def run() -> None:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await declare(conn, schedules)
            if tick is not None:
                await enqueue_tick(conn, tick, tick.latest_due(datetime.now(UTC)))

    # In a thread of its own: Playwright's sync API holds this thread's event loop.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, run()).result()


def test_a_declared_schedule_shows_its_next_run_and_its_last(
    operator: httpx.Client, console_database: str, db: psycopg.Connection[Any], console: Page
) -> None:
    name = f"nightly-{uuid.uuid4().hex[:6]}"
    hourly = Schedule(f"{name}-hourly", "0 * * * *", "report", timezone="Europe/Paris")
    never_ran = Schedule(name, "30 2 * * *", "cleanup")
    declare_and_tick(console_database, [hourly, never_ran], hourly)

    rows = {s["name"]: s for s in operator.get("/v1/admin/schedules").json()["schedules"]}
    now = datetime.now(UTC)
    ran = rows[hourly.name]
    assert (ran["cron"], ran["timezone"], ran["kind"]) == ("0 * * * *", "Europe/Paris", "report")
    next_run = datetime.fromisoformat(ran["next_run"])
    assert now < next_run <= now + timedelta(hours=1)
    assert next_run.minute == 0
    assert next_run.second == 0
    assert datetime.fromisoformat(ran["last_tick"]) == hourly.latest_due(now)
    assert ran["job_state"] in ("queued", "running", "completed", "failed")
    waiting = rows[never_ran.name]
    assert waiting["last_tick"] is None
    assert waiting["job_id"] is None
    assert datetime.fromisoformat(waiting["next_run"]) == never_ran.next_after(now)

    # Declared again (a worker restarted with another expression): the new one shows.
    declare_and_tick(console_database, [Schedule(never_ran.name, "45 3 * * *", "cleanup")], None)
    again = {s["name"]: s for s in operator.get("/v1/admin/schedules").json()["schedules"]}
    assert again[never_ran.name]["cron"] == "45 3 * * *"

    console.goto(console.url.split("#")[0] + "#/queues")
    row = console.locator(f'#schedules-body tr[data-schedule="{never_ran.name}"]')
    expect(row).to_contain_text("45 3 * * *")
    expect(row).to_contain_text("never")
    expect(row.locator("td[data-next]")).not_to_have_text("not declared")
    expect(console.locator(f'#schedules-body tr[data-schedule="{hourly.name}"]')).to_contain_text(
        "Europe/Paris"
    )
