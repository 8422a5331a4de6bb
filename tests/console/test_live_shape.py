"""The console follows its shapes with errands.js (one shape follower for the browser):
it loads errands.js's session code from the service, reconnects with errands.js's
backoff after the service fails, starts over after a must-refetch, and stays live."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest
from playwright.sync_api import Page, Route, expect

import errands
from tests.client.processes import SyncServer
from tests.console.pages import ROWS, show_queue

pytestmark = pytest.mark.browser

STREAM = "**/v1/shapes/background_jobs/stream?**"


def loaded_scripts(tab: Page) -> list[str]:
    """The paths of every script the tab loaded."""
    names = tab.evaluate("performance.getEntriesByType('resource').map((e) => e.name)")
    return [urlsplit(name).path for name in names]


def test_the_console_follows_its_shapes_with_errands_js(
    open_tab: Callable[..., Page], sign_in_link: str, service: SyncServer
) -> None:
    tab = open_tab(sign_in_link)
    tab.locator("#view-jobs[data-loaded=true]").wait_for()
    expect(tab.locator("#live")).to_have_attribute("data-status", "live")
    scripts = loaded_scripts(tab)
    assert "/v1/client/session.js" in scripts, scripts
    assert "/v1/client/model.js" in scripts, scripts


def test_after_failures_and_a_must_refetch_the_list_is_live_again(
    open_tab: Callable[..., Page],
    sign_in_link: str,
    service: SyncServer,
    db: psycopg.Connection[Any],
    queue: str,
) -> None:
    tab = open_tab(sign_in_link, refusals=True)  # the 503s and the 409 below are logged
    tab.locator("#view-jobs[data-loaded=true]").wait_for()
    asked: list[dict[str, list[str]]] = []
    answers = [
        (503, "unavailable", "the test's proxy is down"),
        (503, "unavailable", "still down"),
        (409, "must_refetch", "the shape was rebuilt"),
    ]

    def answer(route: Route) -> None:
        asked.append(parse_qs(urlsplit(route.request.url).query))
        if answers:
            status, code, message = answers.pop(0)
            route.fulfill(status=status, json={"error": {"code": code, "message": message}})
        else:
            route.continue_()

    tab.route(STREAM, answer)
    statuses = "window.seen = []; new MutationObserver(() => window.seen.push(document"
    statuses += ".querySelector('#live').dataset.status)).observe(document.querySelector"
    statuses += "('#live'), {attributes: true})"
    tab.evaluate(statuses)
    show_queue(tab, queue)  # a new filter: new shapes, through the failing proxy
    expect(tab.locator("#live")).to_have_attribute("data-status", "live", timeout=30_000)
    seen = tab.evaluate("window.seen")
    assert "offline" in seen, seen  # the failures were shown, then retried
    assert not answers, "every refusal was asked for"
    assert len(asked) > 3, asked
    assert asked[3]["offset"] == ["-1"], asked  # after the must-refetch: from the start

    job = errands.enqueue(db, "nobody-runs-this", {}, queue=queue)
    expect(tab.locator(f"{ROWS}[data-id='{job}']")).to_have_count(1)
    db.execute("UPDATE background_jobs SET state = 'cancelled' WHERE id = %s", (job,))
    row = tab.locator(f"{ROWS}[data-id='{job}']")
    expect(row).to_have_attribute("data-state", "cancelled")
