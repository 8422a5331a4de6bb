"""A read-only operator in the console: it sees every job, queue and worker, and is
offered no action (the service would refuse one: tests/console/test_control_api.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from playwright.sync_api import Page, expect

import errands
from tests.client.processes import SyncServer
from tests.console.conftest import errands_token
from tests.console.pages import ROWS, open_view, show_queue

pytestmark = pytest.mark.browser


def test_a_read_only_operator_sees_everything_and_is_offered_no_action(
    open_tab: Callable[..., Page], service: SyncServer, db: psycopg.Connection[Any], queue: str
) -> None:
    job = errands.enqueue(db, "nobody-runs-this", {}, queue=queue)
    link = errands_token(
        "--user", "vera", "--operator", "--read-only", "--console-url", service.url
    )
    tab = open_tab(link)
    tab.locator("#view-jobs[data-loaded=true]").wait_for()
    expect(tab.locator("#read-only")).to_be_visible()
    show_queue(tab, queue)
    expect(tab.locator(f"{ROWS}[data-id='{job}']")).to_be_visible()
    expect(tab.locator("#bulk-cancel")).to_be_hidden()

    open_view(tab, service.url, f"jobs/{job}")
    expect(tab.locator("#view-job h1 .badge")).to_have_text("queued")
    expect(tab.locator("#job-cancel")).to_be_hidden()

    open_view(tab, service.url, "queues")
    row = tab.locator(f"#queues-body tr[data-queue='{queue}']")
    expect(row).to_contain_text("running")
    expect(row.locator("button")).to_be_hidden()
