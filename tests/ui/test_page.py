"""The Background Jobs page in a real Chromium, against real processes: ``errands ui``
(its own replica), ``errands server --insecure``, ``errands worker`` with the demo's
handlers, and Postgres."""

from __future__ import annotations

import json
import re
from typing import Any

import psycopg
import pytest
from playwright.sync_api import Locator, Page, expect

from tests.ui.conftest import ARTIFACTS

pytestmark = pytest.mark.browser


def submit(page: Page, kind: str, payload: str) -> Locator:
    """Submit a job through the form; its row in the table."""
    page.get_by_label("Kind").select_option(kind)
    page.get_by_label("Payload").fill(payload)
    page.get_by_role("button", name="Submit job").click()
    note = page.locator("#submit-note")
    expect(note).to_have_text(re.compile(r"Submitted \w{8}\."))
    short_id = (note.text_content() or "").split()[1].rstrip(".")
    row = page.locator("#jobs tr").filter(has=page.locator(".job-id", has_text=short_id))
    expect(row).to_have_count(1)
    note.evaluate("note => { note.textContent = '' }")  # the next submit waits for its own
    return row


def job_id(row: Locator) -> str:
    """The full id of the job a row shows."""
    value = row.get_attribute("data-id")
    assert value
    return value


def stored(db: psycopg.Connection, row: Locator) -> dict[str, Any] | None:
    """The job's row in Postgres, or None if it has not reached the server."""
    found = db.execute(
        "SELECT state, cancelled, result, error FROM background_jobs WHERE id = %s",
        (job_id(row),),
    ).fetchone()
    if found is None:
        return None
    return dict(zip(("state", "cancelled", "result", "error"), found, strict=True))


def record_percentages(page: Page, row: Locator) -> None:
    """Keep every percentage the row shows, in window.seen[id]."""
    page.evaluate(
        """id => {
            window.seen = window.seen || {};
            const seen = window.seen[id] = [];
            const row = document.querySelector(`tr[data-id="${id}"]`);
            const note = () => {
                const shown = row.querySelector(".percent, .state-done");
                if (shown) seen.push(parseInt(shown.textContent, 10));
            };
            note();
            new MutationObserver(note).observe(row, { subtree: true, childList: true });
        }""",
        job_id(row),
    )


def test_a_job_runs_with_live_progress_and_its_result_appears(
    page: Page, db: psycopg.Connection
) -> None:
    slow = submit(page, "random_progress", '{"delay": 0.15}')
    record_percentages(page, slow)
    primes = submit(page, "primes", '{"n": 100000}')

    for row in (slow, primes):
        expect(row.locator(".state-done")).to_have_text("100%", timeout=60_000)
        shown = json.loads(row.locator(".result-json").text_content() or "")
        assert shown == (stored(db, row) or {})["result"]
        expect(row.get_by_role("button", name=re.compile("Cancel job"))).to_be_disabled()
    assert json.loads(primes.locator(".result-json").text_content() or "")["primes"] == 9592

    seen: list[int] = page.evaluate("id => window.seen[id]", job_id(slow))
    assert seen == sorted(seen), "progress went backwards"
    assert any(0 < percent < 100 for percent in seen), f"no progress shown between: {seen}"
    assert seen[-1] == 100


def test_offline_jobs_wait_marked_pending_and_run_once_back_online(
    page: Page, db: psycopg.Connection
) -> None:
    switch = page.get_by_role("switch")
    state = page.locator("#connectivity-state")
    expect(state).to_have_text("Online")
    expect(switch).to_have_attribute("aria-checked", "true")

    switch.click()
    expect(switch).to_have_attribute("aria-checked", "false")
    expect(state).to_have_text("Offline")
    rows = [submit(page, "random_progress", '{"delay": 0.05}') for _ in range(2)]
    for row in rows:
        expect(row.get_by_text("Not uploaded")).to_be_visible()
        expect(row.locator(".cell-progress")).to_have_text("Waiting to upload")
    expect(page.locator("#pending-count")).to_have_text("2 changes to upload")
    assert [stored(db, row) for row in rows] == [None, None]

    switch.click()
    expect(state).to_have_text("Online")
    for row in rows:
        expect(row.locator(".state-done")).to_have_text("100%", timeout=60_000)
        expect(row.get_by_text("Not uploaded")).to_be_hidden()
    expect(page.locator("#pending-count")).to_be_hidden()
    assert [(stored(db, row) or {}).get("state") for row in rows] == ["completed"] * 2


def test_cancelling_a_running_job(page: Page, db: psycopg.Connection) -> None:
    row = submit(page, "random_progress", '{"delay": 1.0}')
    expect(row.get_by_role("progressbar")).to_be_visible(timeout=60_000)  # running
    cancel = row.get_by_role("button", name=re.compile("Cancel job"))
    cancel.click()
    expect(cancel).to_be_disabled()
    expect(row.locator(".state-cancelled")).to_have_text("Cancelled", timeout=60_000)
    expect(row.locator(".cell-result")).to_have_text("cancelled")
    assert stored(db, row) == {
        "state": "cancelled",
        "cancelled": True,
        "result": None,
        "error": None,
    }


def test_a_failing_job_shows_its_error(page: Page, db: psycopg.Connection) -> None:
    row = submit(page, "fails", '{"message": "the printer is on fire"}')
    expect(row.locator(".state-failed")).to_contain_text("Failed", timeout=60_000)
    expect(row.locator(".result-error")).to_have_text("RuntimeError: the printer is on fire")
    job = stored(db, row)
    assert job is not None
    assert (job["state"], job["error"]["message"]) == ("failed", "the printer is on fire")
    # The traceback (the worker's files and lines) is for operators: it never syncs here.
    assert "RuntimeError" in job["error"]["traceback"]
    expect(row.locator("details.traceback")).to_have_count(0)


def test_an_invalid_payload_is_explained_and_nothing_is_submitted(
    page: Page, page_url: str
) -> None:
    before = page.request.get(f"{page_url}api/jobs").json()["jobs"]
    payload = page.get_by_label("Payload")
    payload.fill('{"n": 10,')
    page.get_by_role("button", name="Submit job").click()

    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("The payload is not valid JSON")
    expect(payload).to_have_attribute("aria-invalid", "true")
    expect(payload).to_be_focused()
    after = page.request.get(f"{page_url}api/jobs").json()
    assert after["jobs"] == before
    assert after["status"]["pending"] == 0
    expect(page.locator("#jobs tr")).to_have_count(len(before))

    payload.fill('{"n": 10}')
    expect(alert).to_be_hidden()


def test_screenshots_at_desktop_and_phone_width(page: Page) -> None:
    """Jobs in every state, photographed wide and at phone width (test-artifacts/)."""
    submit(page, "primes", '{"n": 20000}')
    running = submit(page, "random_progress", '{"delay": 1.0}')
    expect(running.locator(".percent")).to_have_text(re.compile(r"^[1-9]\d%$"), timeout=60_000)
    page.get_by_role("switch").click()
    expect(page.locator("#connectivity-state")).to_have_text("Offline")
    submit(page, "primes", '{"n": 5000000}')
    expect(page.locator("tr.fresh")).to_have_count(0)  # the new row's highlight faded
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "page-desktop.png")

    page.set_viewport_size({"width": 390, "height": 844})
    expect(page.locator(".jobs thead")).to_be_hidden()  # rows become cards
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page is {overflow}px wider than the phone"
    expect(page.get_by_role("switch")).to_be_in_viewport()
    expect(page.get_by_role("button", name="Submit job")).to_be_visible()
    page.screenshot(path=ARTIFACTS / "page-phone.png")
    running.get_by_role("button", name=re.compile("Cancel job")).click()
