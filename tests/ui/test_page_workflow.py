"""``errands ui``'s page (the Python client's own) says what a job waits for: a
workflow made with ``Client.submit(after=...)`` on the page's replica, offline, shows
"Waiting for 1 job", then runs in order once the page's client is back online."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from playwright.sync_api import Page, expect

import errands

pytestmark = pytest.mark.browser


def test_a_job_that_runs_after_another_says_so_then_runs_after_it(
    page: Page, db: psycopg.Connection, tmp_path: Path
) -> None:
    switch = page.get_by_role("switch")
    switch.click()  # the page's client stops syncing: what follows stays local
    expect(page.locator("#connectivity-state")).to_have_text("Offline")
    # Another program on the same replica (as errands ui's page_url fixture made it).
    with errands.Client(replica=tmp_path / "replica.db", server="http://127.0.0.1:9") as client:
        first = client.submit("random_progress", {"delay": 0.05})
        second = client.submit("random_progress", {"delay": 0.05}, after=[first])
    waiting = page.locator(f'#jobs tr[data-id="{second.id}"] .cell-progress')
    expect(waiting).to_have_text("Waiting for 1 job")

    switch.click()
    expect(waiting.locator(".state-done")).to_have_text("100%", timeout=60_000)
    found = db.execute(
        "SELECT a.finished_at <= b.started_at FROM background_jobs a, background_jobs b"
        " WHERE a.id = %s AND b.id = %s",
        (first.id, second.id),
    ).fetchone()
    assert found == (True,)
