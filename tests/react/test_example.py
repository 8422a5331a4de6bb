"""The React example page, the seed recipe's page in React, in Chromium: submit, live
progress, cancel, offline and back, against the real sync service and worker."""

from __future__ import annotations

import json
import time
import uuid
from urllib.parse import urlencode

import httpx
import psycopg
import pytest
from playwright.sync_api import Locator, Page, expect

from errands.sync.auth import make_token
from tests.browser.conftest import SECRET, SyncServer
from tests.react.conftest import Site

pytestmark = pytest.mark.browser


def open_example(page: Page, site: Site, server: SyncServer) -> None:
    """The example page, signed in as a user of the test's own, connected."""
    user = f"react-{uuid.uuid4().hex[:8]}"
    query = urlencode({"server": server.url, "token": make_token(SECRET, user)})
    page.goto(f"{site.origin}/index.html?{query}")
    expect(page.locator("#status")).to_have_text("Connected", timeout=30_000)


def submit(page: Page, kind: str, payload: object) -> str:
    """Submit a job through the page's form; its id (the newest row's)."""
    page.get_by_label("Kind").select_option(kind)
    page.get_by_label("Payload").fill(json.dumps(payload))
    page.get_by_role("button", name="Submit job").click()
    expect(page.locator("#last")).to_be_visible()
    return str(page.locator("tbody tr").first.get_attribute("data-job"))


def row(page: Page, job_id: str) -> Locator:
    """The table row of a job."""
    return page.locator(f'tr[data-job="{job_id}"]')


def progress_of(page: Page, job_id: str) -> int:
    """The job's progress bar, in percent."""
    return int(row(page, job_id).locator("progress").get_attribute("value") or 0)


def test_a_job_runs_to_completion_with_live_progress(
    page: Page, example_site: Site, sync_server: SyncServer
) -> None:
    open_example(page, example_site, sync_server)
    job_id = submit(page, "random_progress", {"delay": 0.25})
    expect(page.locator("#last")).to_contain_text("running", timeout=30_000)
    seen = set()
    deadline = time.monotonic() + 60
    while "completed" not in (page.locator("#last").text_content() or ""):
        assert time.monotonic() < deadline, f"not completed; progress seen: {sorted(seen)}"
        seen.add(progress_of(page, job_id))
        page.wait_for_timeout(100)
    assert len(seen - {0, 100}) >= 2, f"progress seen: {sorted(seen)}"  # moved while it ran
    expect(row(page, job_id).locator(".state")).to_have_text("completed")
    assert progress_of(page, job_id) == 100


def test_a_running_job_is_cancelled_from_its_row(
    page: Page, example_site: Site, sync_server: SyncServer, db: psycopg.Connection
) -> None:
    open_example(page, example_site, sync_server)
    job_id = submit(page, "random_progress", {"delay": 2})
    expect(page.locator("#last")).to_contain_text("running", timeout=30_000)
    row(page, job_id).get_by_role("button", name="Cancel").click()
    expect(row(page, job_id).locator(".state")).to_have_text("cancelled", timeout=30_000)
    state = db.execute("SELECT state FROM background_jobs WHERE id = %s", (job_id,))
    assert state.fetchone() == ("cancelled",)


def test_offline_a_job_waits_on_the_page_and_runs_once_back_online(
    page: Page, example_site: Site, sync_server: SyncServer, db: psycopg.Connection
) -> None:
    open_example(page, example_site, sync_server)
    page.get_by_label("Online").uncheck()
    expect(page.locator("#status")).to_contain_text("Offline")
    job_id = submit(page, "random_progress", {"delay": 0.05})
    expect(row(page, job_id).locator(".state")).to_have_text("queued (not uploaded)")
    page.wait_for_timeout(500)
    found = db.execute("SELECT 1 FROM background_jobs WHERE id = %s", (job_id,))
    assert found.fetchone() is None  # never left the browser
    page.get_by_label("Online").check()
    expect(page.locator("#status")).to_have_text("Connected")
    expect(row(page, job_id).locator(".state")).to_have_text("completed", timeout=30_000)


def test_the_sync_service_serves_the_hooks_and_their_types(sync_server: SyncServer) -> None:
    for name, wanted in (("errands-react.js", "createHooks"), ("errands-react.d.ts", "useJobs")):
        served = httpx.get(f"{sync_server.url}/v1/client/{name}")
        assert served.status_code == 200, name
        assert wanted in served.text
