"""The submit form's "Options" (priority, queue, run at, max attempts, unique key) on the
page of ``errands ui``, in a real Chromium against real processes: what the form sets
reaches the job's row in Postgres, and a bad value is explained and submits nothing.
The hosted page's test (tests/browser/test_hosted_options.py) uses the helpers here."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
from playwright.sync_api import Page, expect

from tests.helpers import wait_for
from tests.ui.conftest import ARTIFACTS
from tests.ui.test_page import job_id, submit

pytestmark = pytest.mark.browser

ZONE = "Asia/Kolkata"
"""The browser's time zone in these tests: +05:30, so a run-at sent as the user's local
time cannot pass for UTC."""
GOOD = {"Priority": "7", "Max attempts": "3", "Queue": "reports", "Unique key": "report-42"}
RUN_AT = "2027-03-04T09:30"
"""What the user types in "Run at" (a datetime-local value, in ZONE)."""
EXPECTED = {
    "priority": 7,
    "max_attempts": 3,
    "queue": "reports",
    "unique_key": "report-42",
    "run_at": datetime(2027, 3, 4, 9, 30, tzinfo=ZoneInfo(ZONE)),
}
BAD = {"Priority": "5000", "Queue": "q" * 201}


def in_time_zone(page: Page, zone: str = ZONE) -> None:
    """Make the page's clock local to ``zone`` (Chromium's own emulation)."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("Emulation.setTimezoneOverride", {"timezoneId": zone})
    offset = datetime(2027, 1, 1, tzinfo=ZoneInfo(zone)).utcoffset()
    assert offset is not None
    minutes = page.evaluate("new Date(2027, 0, 1).getTimezoneOffset()")
    assert minutes == -offset.total_seconds() / 60


def fill_options(page: Page, values: dict[str, str], run_at: str | None = None) -> None:
    """Open "Options" (if closed) and fill the fields ``values`` name by label."""
    options = page.locator("#options")
    if options.get_attribute("open") is None:
        options.locator("summary").click()
    for label, value in values.items():
        options.get_by_label(label, exact=True).fill(value)
    if run_at is not None:
        options.get_by_label("Run at", exact=True).fill(run_at)


def stored_options(db: psycopg.Connection, job: str) -> dict[str, Any] | None:
    """The job's options as Postgres holds them, once the job has reached it."""
    found = db.execute(
        "SELECT priority, max_attempts, queue, unique_key, run_at FROM background_jobs"
        " WHERE id = %s",
        (job,),
    ).fetchone()
    if found is None:
        return None
    names = ("priority", "max_attempts", "queue", "unique_key", "run_at")
    return dict(zip(names, found, strict=True))


def check_bad_options_are_explained(page: Page) -> None:
    """Fill BAD, submit: each bad field says why, "Options" opens on the first, and the
    note says nothing was submitted; fixing them hides the messages."""
    fill_options(page, BAD)
    page.locator("#options summary").click()  # closed again: the submit must reopen it
    expect(page.locator("#options")).not_to_have_attribute("open", "")
    page.get_by_role("button", name="Submit job").click()

    priority = page.get_by_label("Priority", exact=True)
    queue = page.get_by_label("Queue", exact=True)
    expect(page.locator("#options")).to_have_attribute("open", "")
    expect(page.locator("#option-priority-error")).to_have_text(
        "Priority must be a whole number from -1000 to 1000."
    )
    expect(page.locator("#option-queue-error")).to_have_text(
        "The queue must be at most 200 characters (it has 201)."
    )
    for field in (priority, queue):
        expect(field).to_have_attribute("aria-invalid", "true")
    expect(priority).to_be_focused()
    expect(page.locator("#submit-note")).to_have_text("Nothing submitted: fix the marked fields.")

    priority.fill("-1000")
    queue.fill("q" * 200)
    expect(page.locator("#option-priority-error")).to_be_hidden()
    expect(page.locator("#option-queue-error")).to_be_hidden()


def test_options_reach_the_job_in_postgres(page: Page, db: psycopg.Connection) -> None:
    in_time_zone(page)
    expect(page.locator("#options-summary")).to_have_text("defaults")
    fill_options(page, GOOD, RUN_AT)
    expect(page.locator("#options-summary")).to_have_text("5 set")
    row = submit(page, "primes", '{"n": 100}')
    assert wait_for(lambda: stored_options(db, job_id(row)), what="the job in Postgres") == EXPECTED
    expect(row.locator(".cell-progress")).to_have_text("Queued")  # not before 2027

    # The options stay for the next job; the same unique key gives the same job.
    page.get_by_role("button", name="Submit job").click()
    short_id = row.locator(".job-id").text_content()
    expect(page.locator("#submit-note")).to_have_text(f"Submitted {short_id}.")
    same_key = "SELECT count(*) FROM background_jobs WHERE unique_key = 'report-42'"
    assert db.execute(same_key).fetchone() == (1,)


def test_bad_options_are_explained_and_nothing_is_submitted(page: Page, page_url: str) -> None:
    before = page.request.get(f"{page_url}api/jobs").json()["jobs"]
    check_bad_options_are_explained(page)
    after = page.request.get(f"{page_url}api/jobs").json()
    assert after["jobs"] == before
    assert after["status"]["pending"] == 0


def test_the_options_at_phone_width(page: Page) -> None:
    """Open, with a message showing, at 390 px: nothing wider than the phone
    (a screenshot in test-artifacts/)."""
    page.set_viewport_size({"width": 390, "height": 844})
    fill_options(page, {"Priority": "1.5"}, RUN_AT)
    page.get_by_role("button", name="Submit job").click()
    expect(page.locator("#option-priority-error")).to_be_visible()
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page is {overflow}px wider than the phone"
    for label in ("Priority", "Max attempts", "Queue", "Run at", "Unique key"):
        box = page.get_by_label(label, exact=True).bounding_box()
        assert box is not None
        assert box["x"] >= 0
        assert box["x"] + box["width"] <= 390, label
    ARTIFACTS.mkdir(exist_ok=True)
    page.locator(".submit-card").screenshot(path=ARTIFACTS / "page-options-phone.png")
