"""What the console's tests share: reading the page and the database."""

from __future__ import annotations

from typing import Any

import psycopg
from playwright.sync_api import Page, expect

ROWS = "#jobs-body tr[data-id]"


def states(db: psycopg.Connection[Any], queue: str, interval: str = "1 day") -> dict[str, int]:
    """Jobs of ``queue`` received within ``interval``, per state, from the database."""
    return dict(
        db.execute(
            "SELECT state, count(*) FROM background_jobs WHERE queue = %s"
            " AND received_at >= now() - %s::interval GROUP BY state",
            (queue, interval),
        ).fetchall()
    )


def shown_counts(tab: Page) -> dict[str, int]:
    """The counts the state chips show, states with none left out."""
    counts = {}
    for state in ["queued", "running", "completed", "failed", "cancelled"]:
        text = tab.locator(f"[data-count={state}]").inner_text()
        if text != "0":
            counts[state] = int(text)
    return counts


def show_queue(tab: Page, queue: str) -> None:
    """Filter by ``queue`` through the form, as an operator does."""
    tab.locator("#f-queue").fill(queue)
    expect(tab).to_have_url(f"{tab.url.split('#')[0]}#/jobs?queue={queue}")
    tab.locator("#view-jobs[data-loaded=true]").wait_for()


def local_input(tab: Page, iso: str) -> str:
    """An ISO timestamp as a datetime-local value in the browser's time zone."""
    return str(
        tab.evaluate(
            "iso => { const d = new Date(iso);"
            " d.setMinutes(d.getMinutes() - d.getTimezoneOffset());"
            " return d.toISOString().slice(0, 19); }",
            iso,
        )
    )


def open_view(tab: Page, service_url: str, route: str) -> None:
    """Go to ``#/route`` of the console and wait until its view has loaded."""
    tab.goto(f"{service_url}/console#/{route}")
    view = "job" if route.startswith("jobs/") else route.split("?", maxsplit=1)[0]
    tab.locator(f"#view-{view}[data-loaded=true]").wait_for()
