"""The console's jobs in Chromium, against real server and worker processes: every job
with its filters and counts, live, and a job's page with its timeline."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from playwright.sync_api import Page, expect

import errands
from tests.client.processes import SyncServer
from tests.console.pages import ROWS, local_input, show_queue, shown_counts, states
from tests.helpers import ErrandsProcess, wait_for

pytestmark = pytest.mark.browser


@pytest.fixture
def jobs(db: psycopg.Connection[Any], worker: ErrandsProcess, queue: str) -> dict[str, Any]:
    """In this test's queue: 3 jobs that complete, 2 that fail, 1 nobody runs, 1 of
    another owner, and one submitted three days ago; the worker is done with them."""
    made: dict[str, Any] = {
        "completed": [errands.enqueue(db, "add", {"a": n, "b": 1}, queue=queue) for n in range(3)],
        "failed": [
            errands.enqueue(db, "flaky", {"succeed_on": 99}, queue=queue, max_attempts=1)
            for _ in range(2)
        ],
        "queued": errands.enqueue(db, "nobody-runs-this", {}, queue=queue),
        "bob": errands.enqueue(db, "add", {"a": 1, "b": 1}, queue=queue, owner="bob"),
        "old": uuid.uuid4(),
    }
    db.execute(
        "INSERT INTO background_jobs (id, timestamp, received_at, kind, queue, state, finished_at)"
        " VALUES (%s, now() - interval '3 days', now() - interval '3 days', 'add', %s,"
        " 'completed', now() - interval '3 days')",
        (made["old"], queue),
    )
    wait_for(
        lambda: states(db, queue) == {"completed": 4, "failed": 2, "queued": 1},
        timeout=30,
        what="the worker to finish the jobs",
    )
    return made


def test_every_job_with_counts_filtered_by_state_kind_queue_owner_and_time(
    console: Page, db: psycopg.Connection[Any], jobs: dict[str, Any], queue: str
) -> None:
    show_queue(console, queue)
    expect(console.locator(ROWS)).to_have_count(7)
    assert shown_counts(console) == states(db, queue) == {"completed": 4, "failed": 2, "queued": 1}
    expect(console.locator("[data-count=all]")).to_have_text("7")

    console.locator("[data-filter-state=failed]").click()
    expect(console.locator(ROWS)).to_have_count(2)
    assert set(console.locator(ROWS).evaluate_all("rows => rows.map(r => r.dataset.id)")) == {
        str(j) for j in jobs["failed"]
    }
    expect(console.locator(f"{ROWS}[data-state=failed]")).to_have_count(2)
    assert "state=failed" in console.url
    assert shown_counts(console) == {"completed": 4, "failed": 2, "queued": 1}  # all states

    console.locator("[data-filter-state='']").click()
    console.locator("#f-kind").fill("add")
    expect(console.locator(ROWS)).to_have_count(4)
    console.locator("#f-owner").fill("bob")
    expect(console.locator(ROWS)).to_have_count(1)
    expect(console.locator(f"{ROWS}[data-id='{jobs['bob']}']")).to_be_visible()
    console.locator("#f-owner").fill("")
    expect(console.locator(ROWS)).to_have_count(4)

    console.locator("#f-range").select_option("all")
    expect(console.locator(ROWS)).to_have_count(5)
    expect(console.locator(f"{ROWS}[data-id='{jobs['old']}']")).to_be_visible()
    console.locator("#f-range").select_option("custom")
    old = db.execute(
        "SELECT received_at - interval '1 hour', received_at + interval '1 hour'"
        " FROM background_jobs WHERE id = %s",
        (jobs["old"],),
    ).fetchone()
    assert old is not None
    console.locator("#f-from").fill(local_input(console, old[0].isoformat()))
    console.locator("#f-to").fill(local_input(console, old[1].isoformat()))
    expect(console.locator(ROWS)).to_have_count(1)
    expect(console.locator(f"{ROWS}[data-id='{jobs['old']}']")).to_be_visible()
    expect(console.locator("[data-count=all]")).to_have_text("1")


def test_the_list_is_live(
    console: Page, db: psycopg.Connection[Any], worker: ErrandsProcess, queue: str
) -> None:
    show_queue(console, queue)
    expect(console.locator(ROWS)).to_have_count(0)
    expect(console.locator("#jobs-body")).to_contain_text("No job matches this filter.")

    job = errands.enqueue(db, "sleep_async", {"steps": 8, "step": 0.25}, queue=queue)

    row = console.locator(f"{ROWS}[data-id='{job}']")
    expect(row).to_have_attribute("data-state", "running")
    expect(row.locator(".progress")).to_be_visible()
    expect(row).to_have_attribute("data-state", "completed", timeout=30_000)
    expect(console.locator("[data-count=completed]")).to_have_text("1")
    db.execute("DELETE FROM background_jobs WHERE id = %s", (job,))
    expect(row).to_have_count(0)
    expect(console.locator("[data-count=all]")).to_have_text("0")


def test_a_jobs_page_shows_payload_error_traceback_and_each_attempt(
    console: Page, db: psycopg.Connection[Any], worker: ErrandsProcess, queue: str
) -> None:
    job = errands.enqueue(db, "flaky", {"succeed_on": 99}, queue=queue, max_attempts=2)
    wait_for(lambda: states(db, queue) == {"failed": 1}, timeout=30, what="the job to fail")
    events = db.execute(
        "SELECT type, attempt, worker, error FROM job_events WHERE job_id = %s ORDER BY id",
        (job,),
    ).fetchall()
    show_queue(console, queue)

    console.locator(f"{ROWS}[data-id='{job}'] a").first.click()

    page = console.locator("#view-job[data-loaded=true]")
    expect(page).to_be_visible()
    assert console.url.endswith(f"#/jobs/{job}")
    expect(page.locator("h1")).to_contain_text("flaky")
    expect(page.locator("h1 .badge")).to_have_text("failed")
    expect(page.locator("#job-payload")).to_contain_text('"succeed_on": 99')
    expect(page.locator("#job-result")).to_contain_text("—")
    expect(page.locator("#job-error .error-message")).to_have_text(
        "RuntimeError: failure on attempt 2"
    )
    expect(page.locator("#job-error .traceback")).to_contain_text("Traceback (most recent call")
    expect(page.locator("#job-error .traceback")).to_contain_text('raise RuntimeError(f"failure')
    attempts = page.locator("#attempts tbody tr")
    expect(attempts).to_have_count(2)
    worker_ids = [w for t, _, w, _ in events if t == "started"]
    outcomes = zip(["retried", "failed"], worker_ids, strict=True)
    for number, (outcome, worker_id) in enumerate(outcomes):
        attempt = attempts.nth(number)
        expect(attempt.locator("td").nth(0)).to_have_text(str(number + 1))
        expect(attempt.locator("td").nth(1)).to_have_text(worker_id)
        expect(attempt.locator(".badge")).to_have_text(outcome)
        expect(attempt.locator(".error-cell")).to_have_text(
            f"RuntimeError: failure on attempt {number + 1}"
        )
        expect(attempt.locator("td").nth(4)).to_have_text(re.compile(r"^\d+(\.\d)? (ms|s)$"))
    expect(page.locator("#events li")).to_have_count(len(events))
    assert page.locator("#events li").evaluate_all("items => items.map(i => i.dataset.type)") == [
        t for t, _, _, _ in events
    ]


def test_a_completed_jobs_page_shows_its_result_and_follows_it_live(
    console: Page, db: psycopg.Connection[Any], worker: ErrandsProcess, queue: str
) -> None:
    job = errands.enqueue(db, "nobody-runs-this", {"x": 1}, queue=queue)
    console.goto(f"{console.url.split('#')[0]}#/jobs/{job}")
    page = console.locator("#view-job[data-loaded=true]")
    expect(page.locator("h1 .badge")).to_have_text("queued")
    expect(page.locator("#attempts")).to_have_count(0)

    # A worker takes it and finishes it, as SQL: the page follows through its shape. It
    # holds a live lease, or the real worker would take the job back as orphaned.
    db.execute(
        "INSERT INTO errands_workers (id, hostname, pid, kinds, lease_expires_at)"
        " VALUES ('w-test', 'test', 1, '{nobody-runs-this}', now() + interval '1 hour')"
    )
    try:
        db.execute(
            "UPDATE background_jobs SET state = 'running', attempts = 1,"
            " lease_owner = 'w-test', started_at = now() WHERE id = %s",
            (job,),
        )
        expect(page.locator("h1 .badge")).to_have_text("running")
        expect(page.locator("#attempts tbody tr .badge")).to_have_text("running")
        db.execute(
            "UPDATE background_jobs SET state = 'completed', result = '{\"answer\": 42}',"
            " finished_at = now() WHERE id = %s",
            (job,),
        )
    finally:
        db.execute("DELETE FROM errands_workers WHERE id = 'w-test'")
    expect(page.locator("h1 .badge")).to_have_text("completed")
    expect(page.locator("#job-result")).to_contain_text('"answer": 42')
    expect(page.locator("#attempts tbody tr .badge")).to_have_text("completed")
    expect(page.locator("#attempts tbody tr td").nth(1)).to_have_text("w-test")
    expect(page.locator("#job-error")).to_be_hidden()


def test_an_unknown_job_says_so(
    open_tab: Callable[..., Page], sign_in_link: str, service: SyncServer
) -> None:
    missing = uuid.uuid4()
    tab = open_tab(sign_in_link, refusals=True)  # the job's 404
    tab.locator("#view-jobs[data-loaded=true]").wait_for()
    tab.goto(f"{service.url}/console#/jobs/{missing}")
    expect(tab.locator("#view-job[data-loaded=true]")).to_contain_text(
        f"No job has the id {missing}"
    )


def test_at_phone_width_and_in_dark_mode(
    open_tab: Callable[..., Page], sign_in_link: str, jobs: dict[str, Any], queue: str
) -> None:
    tab = open_tab(sign_in_link, width=390, color_scheme="dark")
    tab.locator("#view-jobs[data-loaded=true]").wait_for()
    show_queue(tab, queue)
    expect(tab.locator(ROWS)).to_have_count(7)
    # Nothing sticks out sideways; the narrow table keeps state, kind, progress, time.
    assert tab.evaluate("document.documentElement.scrollWidth") <= 390
    last_column = tab.locator("#jobs-table th").last.bounding_box()
    assert last_column is not None
    assert last_column["x"] + last_column["width"] <= 390
    expect(tab.locator("#jobs-table th.hide-narrow").first).to_be_hidden()
    background = "getComputedStyle(document.body).backgroundColor"
    dark = tab.evaluate(background)
    tab.locator("#theme").click()  # Auto -> Dark (the same here), then Light
    tab.locator("#theme").click()
    expect(tab.locator("#theme")).to_have_text("Light")
    light = tab.evaluate(background)
    assert dark == "rgb(14, 17, 23)"
    assert light == "rgb(246, 247, 249)"


def test_the_tab_holds_one_page_and_new_jobs_go_on_top(
    console: Page, db: psycopg.Connection[Any], queue: str
) -> None:
    show_queue(console, queue)
    for n in range(60):
        errands.enqueue(db, "nobody-runs-this", {"n": n}, queue=queue)
    expect(console.locator(ROWS)).to_have_count(50)
    expect(console.locator("#jobs-summary")).to_have_text("50 shown of 60 jobs")
    then = [errands.enqueue(db, "nobody-runs-this", {"n": n}, queue=queue) for n in range(120)]
    # More than two pages arrive while the page is shown: it holds the newest 50 with no
    # gap, and "Older", clicked at once, goes on from the last row shown.
    expect(console.locator(ROWS).first).to_have_attribute("data-id", str(then[-1]))
    expect(console.locator(ROWS)).to_have_count(50)
    shown = console.locator(ROWS).evaluate_all("rows => rows.map(r => r.dataset.id)")
    assert shown == [str(job) for job in reversed(then[70:])]  # the newest 50, no gaps
    console.locator("#page-older").click()
    console.locator("#view-jobs[data-loaded=true]").wait_for()
    expect(console.locator("#jobs-summary")).to_have_text("50 shown of 180 jobs")
    shown = console.locator(ROWS).evaluate_all("rows => rows.map(r => r.dataset.id)")
    assert shown == [str(job) for job in reversed(then[20:70])]
