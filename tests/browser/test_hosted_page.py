"""The Background Jobs page hosted by ``errands server``, on errands.js, in a real
Chromium against real ``errands server`` and ``errands worker`` processes and Postgres:
the browser holds the replica (IndexedDB) and nothing else runs on the user's side."""

from __future__ import annotations

import re
import time
import uuid

import psycopg
import pytest
from playwright.sync_api import Locator, Page, Route, expect

from errands.sync.auth import make_token
from tests.browser.conftest import SECRET, Session
from tests.ui.test_page import job_id, stored, submit

pytestmark = pytest.mark.browser

DONE = 60_000
"""Milliseconds a job of the demo's handlers gets to finish on the shared machine."""


def runs(db: psycopg.Connection, row: Locator) -> tuple[int, int]:
    """How many rows the job has in Postgres, and how many times a worker started it."""
    found = db.execute(
        "SELECT (SELECT count(*) FROM background_jobs WHERE id = %(id)s),"
        " (SELECT count(*) FROM job_events WHERE job_id = %(id)s AND type = 'started')",
        {"id": job_id(row)},
    ).fetchone()
    assert found is not None
    return int(found[0]), int(found[1])


def wait_for_service_worker(page: Page) -> None:
    """Wait until the page's service worker is active: it has cached the page's files and
    serves the next navigations. (This page itself may stay uncontrolled: it started
    loading before the worker was active.)"""
    page.evaluate(
        """async () => {
            const worker = (await navigator.serviceWorker.ready).active;
            while (worker.state !== "activated") {
                await new Promise((resolve) => worker.addEventListener("statechange", resolve));
            }
        }"""
    )


def record_cancel_buttons(page: Page, row: Locator) -> None:
    """Keep, in window.disabled, whether the row's Cancel button was disabled after each
    change to the row: once a cancellation is requested it must never come back."""
    page.evaluate(
        """id => {
            const row = document.querySelector(`tr[data-id="${id}"]`);
            window.disabled = [];
            new MutationObserver(() => window.disabled.push(row.querySelector(".cancel").disabled))
                .observe(row, { subtree: true, childList: true, attributes: true });
        }""",
        job_id(row),
    )


def pending_count(page: Page) -> Locator:
    return page.locator("#pending-count")


def test_sign_in_refuses_a_bad_token_and_keeps_a_good_one(session: Session) -> None:
    page = session.context.new_page()
    page.goto(session.server.url + "/")
    expect(page.get_by_label("Token")).to_be_visible(timeout=30_000)  # its scripts ran
    expect(page.get_by_role("heading", name="Submit new job")).to_be_hidden()
    page.get_by_label("Token").fill("not-a-token")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("The server refused this token")
    page.get_by_label("Token").fill(session.token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#live")).to_have_text("Live")
    expect(page.locator("#connectivity-state")).to_have_text("Online")
    page.reload()  # the token is kept: no sign-in again
    expect(page.locator("#connectivity-state")).to_have_text("Online")
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("Token")).to_be_visible()


def test_submitted_offline_kept_across_a_reload_then_uploaded_and_run_once(
    session: Session, db: psycopg.Connection
) -> None:
    page = session.open()
    wait_for_service_worker(page)
    session.context.set_offline(True)
    expect(page.locator("#connectivity-state")).to_have_text("Reconnecting…")
    rows = [submit(page, "random_progress", '{"delay": 0.05}') for _ in range(2)]
    for row in rows:
        expect(row.get_by_text("Not uploaded")).to_be_visible()

    page.reload()  # offline: the service worker serves the page, IndexedDB the jobs
    expect(page.locator("#live")).to_have_text("Live")
    for row in rows:
        expect(row.get_by_text("Not uploaded")).to_be_visible()
        expect(row.locator(".cell-progress")).to_have_text("Waiting to upload")
    expect(pending_count(page)).to_have_text("2 changes to upload")
    assert [stored(db, row) for row in rows] == [None, None]

    session.context.set_offline(False)
    expect(page.locator("#connectivity-state")).to_have_text("Online")
    for row in rows:
        expect(row.locator(".state-done")).to_have_text("100%", timeout=DONE)
        expect(row.get_by_text("Not uploaded")).to_be_hidden()
    expect(pending_count(page)).to_be_hidden()
    assert [runs(db, row) for row in rows] == [(1, 1), (1, 1)]


def test_cancelled_offline_a_running_job_and_a_job_never_uploaded(
    session: Session, db: psycopg.Connection
) -> None:
    page = session.open()
    running = submit(page, "random_progress", '{"delay": 1.0}')
    expect(running.get_by_role("progressbar")).to_be_visible(timeout=DONE)
    session.context.set_offline(True)
    expect(page.locator("#connectivity-state")).to_have_text("Reconnecting…")
    never_uploaded = submit(page, "random_progress", '{"delay": 0.05}')
    for row in (running, never_uploaded):
        cancel = row.get_by_role("button", name=re.compile("Cancel job"))
        cancel.click()
        expect(cancel).to_be_disabled()
        expect(row.get_by_text("Not uploaded")).to_be_visible()
    record_cancel_buttons(page, running)
    expect(pending_count(page)).to_have_text("3 changes to upload")
    assert (stored(db, running) or {}).get("cancelled") is False
    assert stored(db, never_uploaded) is None

    session.context.set_offline(False)
    for row in (running, never_uploaded):
        expect(row.locator(".state-cancelled")).to_have_text("Cancelled", timeout=DONE)
    expect(pending_count(page)).to_be_hidden()
    assert (stored(db, running) or {})["state"] == "cancelled"
    assert (stored(db, never_uploaded) or {})["state"] == "cancelled"
    assert runs(db, never_uploaded) == (1, 0)  # cancelled before it ever started
    disabled = page.evaluate("window.disabled")
    assert disabled, "the row did not change after the cancellation"
    assert all(disabled), "the cancellation flickered back"


def test_two_tabs_share_one_replica_and_one_connection(
    session: Session, db: psycopg.Connection
) -> None:
    first = session.open(stay=True)
    second = session.open(sign_in=False)  # "stay signed in": the browser's, signed in already
    shape_reads: dict[Page, list[str]] = {first: [], second: []}
    for tab in (first, second):
        tab.on("request", lambda request, tab=tab: shape_reads[tab].append(request.url))
    leaders = [tab.evaluate("window.errands.leader") for tab in (first, second)]
    assert leaders == [True, False]

    session.context.set_offline(True)
    row_in_second = submit(second, "primes", '{"n": 1000}')
    row_in_first = first.locator(f'#jobs tr[data-id="{job_id(row_in_second)}"]')
    expect(row_in_first.get_by_text("Not uploaded")).to_be_visible()  # at once, offline
    session.context.set_offline(False)
    for row in (row_in_first, row_in_second):
        expect(row.locator(".state-done")).to_have_text("100%", timeout=DONE)
    assert any("/v1/shapes/" in url for url in shape_reads[first])
    assert not any("/v1/shapes/" in url for url in shape_reads[second])  # one connection

    first.close()  # the second tab takes the connection over
    expect(second.locator("#connectivity-state")).to_have_text("Online")
    second.wait_for_function("() => window.errands.leader")
    row = submit(second, "primes", '{"n": 2000}')
    expect(row.locator(".state-done")).to_have_text("100%", timeout=DONE)
    assert any("/v1/shapes/" in url for url in shape_reads[second])
    assert runs(db, row) == (1, 1)


@pytest.mark.block_service_workers  # page.route sees every request
def test_the_server_killed_mid_upload_the_job_exists_and_runs_once(
    session: Session, db: psycopg.Connection
) -> None:
    page = session.open()
    killed: list[int] = []

    def apply_then_kill(route: Route) -> None:
        route.fetch()  # the server applies the mutation...
        session.server.kill()  # ...and dies before the browser hears of it
        killed.append(1)
        route.abort("connectionreset")

    page.route("**/v1/mutations", apply_then_kill, times=1)
    row = submit(page, "random_progress", '{"delay": 0.05}')
    page.wait_for_function(
        "() => document.querySelector('#connectivity-state').textContent !== 'Online'"
    )
    assert killed == [1]
    expect(row.get_by_text("Not uploaded")).to_be_visible()
    assert stored(db, row) is not None  # applied, unacknowledged

    session.server.start()
    expect(row.locator(".state-done")).to_have_text("100%", timeout=DONE)
    expect(row.get_by_text("Not uploaded")).to_be_hidden()
    expect(pending_count(page)).to_be_hidden()
    assert runs(db, row) == (1, 1)


def test_a_must_refetch_rebuilds_the_rows_and_keeps_the_outbox(
    session: Session, db: psycopg.Connection
) -> None:
    page = session.open()
    gone = submit(page, "primes", '{"n": 1000}')
    expect(gone.locator(".state-done")).to_have_text("100%", timeout=DONE)
    switch = page.get_by_role("switch")
    switch.click()
    expect(page.locator("#connectivity-state")).to_have_text("Offline")
    waiting = submit(page, "primes", '{"n": 1000}')
    db.execute("DELETE FROM background_jobs WHERE id = %s", (job_id(gone),))
    db.execute("SELECT errands_sync_prune('0 seconds')")  # the page's offset is past the horizon
    # A running service may still answer that offset exactly from its in-memory change
    # log (it read the delete before the prune); a restarted one can only say refetch.
    session.server.kill()
    session.server.start()

    switch.click()
    expect(waiting.locator(".state-done")).to_have_text("100%", timeout=DONE)
    expect(gone).to_have_count(0)
    expect(pending_count(page)).to_be_hidden()
    assert any("must-refetch" in warning for warning in session.warnings), session.warnings
    assert runs(db, waiting) == (1, 1)


def test_the_page_opens_with_the_network_off(session: Session, db: psycopg.Connection) -> None:
    page = session.open(stay=True)  # a new tab opens signed in
    done = submit(page, "primes", '{"n": 1000}')
    expect(done.locator(".state-done")).to_have_text("100%", timeout=DONE)
    wait_for_service_worker(page)
    done_id = job_id(done)
    page.close()

    session.context.set_offline(True)
    page = session.context.new_page()
    page.goto(session.server.url + "/")
    expect(page.locator("#live")).to_have_text("Live")
    expect(page.locator(f'#jobs tr[data-id="{done_id}"] .state-done')).to_have_text("100%")
    expect(page.locator("#connectivity-state")).to_have_text("Reconnecting…")
    expect(page.get_by_label("Kind")).to_have_value("random_progress")  # the server's kinds
    offline = submit(page, "primes", '{"n": 1000}')
    expect(offline.get_by_text("Not uploaded")).to_be_visible()

    session.context.set_offline(False)
    expect(offline.locator(".state-done")).to_have_text("100%", timeout=DONE)
    assert runs(db, offline) == (1, 1)


@pytest.mark.block_service_workers  # page.route sees every request
def test_live_through_long_polls_when_a_proxy_spoils_the_stream(session: Session) -> None:
    session.context.route(
        "**/v1/shapes/background_jobs/stream*",
        lambda route: route.fulfill(status=200, content_type="text/html", body="<p>proxy</p>"),
    )
    page = session.open()
    row = submit(page, "random_progress", '{"delay": 0.05}')
    expect(row.locator(".state-done")).to_have_text("100%", timeout=DONE)
    assert page.evaluate("window.errands.live") == "long-poll"


def test_a_refused_job_is_marked_rejected_and_the_jobs_behind_it_upload(
    session: Session, db: psycopg.Connection
) -> None:
    """The replica holds an insert the server must refuse (another user's job id, as a
    buggy program might write): the job shows as rejected, and the one behind it runs."""
    taken = str(uuid.uuid4())
    db.execute(
        "INSERT INTO background_jobs (id, timestamp, kind, payload, owner)"
        " VALUES (%s, now(), 'primes', '{}', 'someone-else')",
        (taken,),
    )
    page = session.open()
    page.get_by_role("switch").click()
    expect(page.locator("#connectivity-state")).to_have_text("Offline")
    page.evaluate(
        """id => window.errands.replica.transaction(["outbox", "meta"], "readwrite", (stores) => {
            const values = { id, timestamp: new Date().toISOString(), kind: "primes", payload: {} };
            return window.errands.replica.addEntry(stores, id, "insert", values);
        })""",
        taken,
    )
    behind = submit(page, "primes", '{"n": 1000}')
    refused = page.locator(f'#jobs tr[data-id="{taken}"]')
    expect(pending_count(page)).to_have_text("2 changes to upload")

    page.get_by_role("switch").click()
    expect(refused.locator(".state-failed")).to_contain_text("Rejected")
    expect(refused.locator(".result-error")).to_contain_text("validation_error")
    expect(behind.locator(".state-done")).to_have_text("100%", timeout=DONE)
    expect(pending_count(page)).to_be_hidden()
    assert page.evaluate("window.errands.status.rejected") == 1
    owner = db.execute("SELECT owner FROM background_jobs WHERE id = %s", (taken,)).fetchone()
    assert owner == ("someone-else",)


def test_an_expired_token_stops_the_sync_and_says_so(session: Session) -> None:
    lifetime = 10  # seconds: long enough to sign in on a busy machine
    expires = time.monotonic() + lifetime
    session.token = make_token(SECRET, session.user, expires_in=lifetime)
    page = session.open()
    switch = page.get_by_role("switch")
    switch.click()
    expect(page.locator("#connectivity-state")).to_have_text("Offline")
    row = submit(page, "primes", '{"n": 1000}')
    time.sleep(max(0.0, expires - time.monotonic()) + 1.5)  # past the token's expiry
    switch.click()
    detail = page.locator("#connectivity-detail")
    expect(detail).to_contain_text("the server refused the token")
    expect(detail).to_contain_text("expired")
    expect(row.get_by_text("Not uploaded")).to_be_visible()  # kept for the next sign-in
    failed = page.evaluate(
        "id => window.errands.wait(id, { timeout: 5 }).catch((error) => error.name)",
        job_id(row),
    )
    assert failed == "Unauthorized"
    session.errors.clear()  # the stop is logged as an error: it is what this test wants
