"""Offline at scale, counted rather than timed (timings are bench/browser_bench.py's): in
Chromium, the IndexedDB records a submit reads -- the write, the subscriber's newest
jobs and the status counts -- do not grow with the outbox."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import Session

pytestmark = pytest.mark.browser

COUNT_READS = """() => {
    window.reads = 0;
    const wrapRequest = (proto, name) => {
        const original = proto[name];
        proto[name] = function (...args) {
            const request = original.apply(this, args);
            request.addEventListener("success", () => {
                const result = request.result;
                window.reads += Array.isArray(result) ? result.length : 1;
            });
            return request;
        };
    };
    const reading = ["get", "getAll", "getAllKeys", "count", "openCursor"];
    for (const proto of [IDBObjectStore.prototype, IDBIndex.prototype]) {
        for (const name of reading) wrapRequest(proto, name);
    }
    const advance = IDBCursor.prototype.continue;
    IDBCursor.prototype.continue = function (...args) {
        window.reads += 1;
        return advance.apply(this, args);
    };
}"""
"""Count every record IndexedDB hands the page: each get, each item of a getAll, each
step of a cursor."""

SUBMIT = """async (times) => {
    for (let i = 0; i < times; i++) await window.errands.submit("primes", { n: i });
    while (window.errands.refreshing) await window.errands.refreshing;
    window.reads = 0;
    await window.errands.submit("primes", { n: -1 });
    while (window.errands.refreshing) await window.errands.refreshing;
    return window.reads;
}"""
"""Submit ``times`` jobs, then one more: the records that last one cost, its subscriber's
refresh included."""


def test_a_submit_reads_as_much_after_600_waiting_as_after_60(session: Session) -> None:
    page = session.open()
    page.get_by_role("switch").click()  # offline: the outbox only grows
    expect(page.locator("#connectivity-state")).to_have_text("Offline")
    page.evaluate(COUNT_READS)
    early = page.evaluate(SUBMIT, 60)  # past the 50 jobs the page shows
    late = page.evaluate(SUBMIT, 540)
    assert early > 0
    assert late <= early * 1.1, (early, late)


BURST = """async (times) => {
    let deliveries = 0;
    let shown = [];
    const unsubscribe = window.errands.subscribe((jobs) => {
        deliveries += 1;
        shown = jobs.map((job) => job.id);
    }, { limit: 10 });
    while (window.errands.refreshing) await window.errands.refreshing;
    deliveries = 0;
    const started = performance.now();
    const submitted = [];
    for (let i = 0; i < times; i++) {
        submitted.push((await window.errands.submit("primes", { n: i })).id);
    }
    const elapsed = performance.now() - started;
    while (window.errands.refreshing) await window.errands.refreshing;
    unsubscribe();
    return { deliveries, elapsed, shown, newest: submitted.slice(-10).reverse() };
}"""
"""Subscribe, submit ``times`` jobs one after another, and count the deliveries and what
the subscriber was shown last."""


def test_a_burst_of_submits_reads_for_the_subscriber_once_per_pause_not_per_write(
    session: Session,
) -> None:
    """A subscriber's read holds up the next write (same stores): during a burst the
    client reads for it at most every 100 ms (REFRESH_MAX_WAIT), and once the burst ends,
    with the newest job."""
    page = session.open()
    page.get_by_role("switch").click()
    expect(page.locator("#connectivity-state")).to_have_text("Offline")
    burst = page.evaluate(BURST, 300)
    # The subscriber saw the end of the burst, newest first, though jobs submitted within
    # one millisecond share a timestamp (their ids rise: model.js uuid7).
    assert burst["shown"] == burst["newest"]
    windows = burst["elapsed"] / 100
    assert 1 <= burst["deliveries"] <= windows + 3, burst  # before: one per ~2 submits
