"""Clicks land while a job streams its progress (issue 16): the state chips, a job's
link and the Cancel button of a running job's page, each pressed at a normal speed
(the button held 120 ms) twenty times while the row changes under the pointer. Rows,
chips and buttons are updated in place, never rebuilt."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from playwright.sync_api import Locator, Page, expect

import errands
from tests.client.processes import SyncServer
from tests.console.pages import ROWS, open_view, show_queue, states
from tests.helpers import ErrandsProcess, wait_for

pytestmark = pytest.mark.browser

PRESSES = 20
HELD_MS = 120


def press(tab: Page, target: Locator) -> None:
    """A click as a person makes it: down, held 120 ms, up, on the element's middle."""
    box = target.bounding_box()
    assert box is not None
    tab.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    tab.mouse.down()
    tab.wait_for_timeout(HELD_MS)
    tab.mouse.up()


@pytest.fixture
def streaming(
    db: psycopg.Connection[Any], worker: ErrandsProcess, queue: str
) -> Iterator[uuid.UUID]:
    """A job of this test's queue that runs for a minute, writing progress every 0.25 s."""
    job = errands.enqueue(db, "sleep_async", {"steps": 240, "step": 0.25}, queue=queue)
    wait_for(lambda: states(db, queue) == {"running": 1}, timeout=30, what="the job to start")
    yield job
    errands.cancel(db, job)


def progress_moves(tab: Page, row: Locator) -> None:
    """The row really is changing under the pointer."""
    before = row.locator(".progress-text").inner_text()
    expect(row.locator(".progress-text")).not_to_have_text(before, timeout=5_000)
    assert tab.url  # the tab is alive


def test_state_chips_take_every_click_while_a_job_streams(
    console: Page, streaming: uuid.UUID, queue: str
) -> None:
    show_queue(console, queue)
    row = console.locator(f"{ROWS}[data-id='{streaming}']")
    expect(row).to_have_attribute("data-state", "running")
    progress_moves(console, row)
    for number in range(PRESSES):
        state = "running" if number % 2 == 0 else ""
        chip = console.locator(f"[data-filter-state='{state}']")
        press(console, chip)
        expect(chip).to_have_attribute("aria-pressed", "true", timeout=2_000)
        console.locator("#view-jobs[data-loaded=true]").wait_for()
    progress_moves(console, row)


def test_a_jobs_link_takes_every_click_while_it_streams(
    console: Page, streaming: uuid.UUID, queue: str
) -> None:
    show_queue(console, queue)
    listing = console.url
    for _ in range(PRESSES):
        link = console.locator(f"{ROWS}[data-id='{streaming}'] a").first
        expect(link).to_be_visible()
        press(console, link)
        expect(console).to_have_url(f"{listing.split('#')[0]}#/jobs/{streaming}", timeout=2_000)
        console.go_back()
        console.locator("#view-jobs[data-loaded=true]").wait_for()


def test_cancel_on_a_running_jobs_page_takes_every_click(
    console: Page, service: SyncServer, streaming: uuid.UUID
) -> None:
    open_view(console, service.url, f"jobs/{streaming}")
    cancel = console.locator("#job-cancel")
    expect(cancel).to_be_enabled()
    dialog = console.locator("#confirm")
    progress = console.locator("#view-job dd").nth(4)
    before = progress.inner_text()
    for _ in range(PRESSES):
        press(console, cancel)
        expect(dialog).to_be_visible(timeout=2_000)
        dialog.get_by_role("button", name="Keep them").click()
        expect(dialog).to_be_hidden()
    expect(progress).not_to_have_text(before)  # it streamed all along
