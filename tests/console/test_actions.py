"""Retry, cancel and delete from the console in Chromium, one job and in bulk, each
confirmed first and reported after, against real server and worker processes."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from playwright.sync_api import Page, expect

import errands
from tests.client.processes import SyncServer
from tests.console.pages import ROWS, open_view, show_queue, states
from tests.helpers import ErrandsProcess, wait_for

pytestmark = pytest.mark.browser


def open_job(tab: Page, service: SyncServer, job: uuid.UUID) -> None:
    open_view(tab, service.url, f"jobs/{job}")


def confirm(tab: Page, title: str, button: str) -> None:
    """Check the confirmation's question, and confirm."""
    dialog = tab.locator("#confirm")
    expect(dialog).to_be_visible()
    expect(dialog.locator("#confirm-title")).to_have_text(title)
    dialog.get_by_role("button", name=button, exact=True).click()
    expect(dialog).to_be_hidden()


def event_types(db: psycopg.Connection[Any], job: uuid.UUID) -> list[str]:
    rows = db.execute("SELECT type FROM job_events WHERE job_id = %s ORDER BY id", (job,))
    return [t for (t,) in rows.fetchall()]


def test_retry_a_failed_job_from_its_page(
    console: Page,
    db: psycopg.Connection[Any],
    worker: ErrandsProcess,
    service: SyncServer,
    queue: str,
) -> None:
    job = errands.enqueue(db, "flaky", {"succeed_on": 2}, queue=queue, max_attempts=1)
    wait_for(lambda: states(db, queue) == {"failed": 1}, timeout=30, what="the job to fail")
    open_job(console, service, job)
    expect(console.locator("#job-cancel")).to_be_disabled()  # it has ended

    console.locator("#job-retry").click()
    confirm(console, f"Retry job {str(job)[-8:]}?", "Retry")

    expect(console.locator("#result")).to_contain_text("Retried 1 job.")
    expect(console.locator(f"#result a[href='#/jobs/{job}']")).to_be_visible()
    # The second attempt succeeds, and the page follows it.
    expect(console.locator("h1 .badge")).to_have_text("completed", timeout=30_000)
    expect(console.locator("#attempts tbody tr .badge")).to_have_text(["failed", "completed"])
    expect(console.locator("#job-result")).to_contain_text("ok on attempt 2")
    # The timeline names the operator who retried it, and no worker for that step.
    retried = console.locator("#events li[data-type=retried]")
    expect(retried).to_contain_text("by ops")
    expect(retried.locator("code")).to_have_count(0)
    assert event_types(db, job) == [
        "queued",
        "started",
        "failed",
        "retried",
        "started",
        "completed",
    ]


def test_cancel_a_running_job_from_its_page(
    console: Page,
    db: psycopg.Connection[Any],
    worker: ErrandsProcess,
    service: SyncServer,
    queue: str,
) -> None:
    job = errands.enqueue(db, "sleep_async", {"steps": 300, "step": 0.1}, queue=queue)
    wait_for(lambda: states(db, queue) == {"running": 1}, timeout=30, what="the job to start")
    open_job(console, service, job)
    expect(console.locator("#job-retry")).to_be_disabled()

    console.locator("#job-cancel").click()
    confirm(console, f"Cancel job {str(job)[-8:]}?", "Cancel")

    expect(console.locator("#result")).to_contain_text("Asked to cancel 1 job.")
    expect(console.locator("h1 .badge")).to_have_text("cancelled", timeout=30_000)
    expect(console.locator("#attempts tbody tr .badge")).to_have_text("cancelled")
    assert states(db, queue) == {"cancelled": 1}


def test_delete_a_job_from_its_page(
    open_tab: Callable[..., Page],
    sign_in_link: str,
    db: psycopg.Connection[Any],
    service: SyncServer,
    queue: str,
) -> None:
    job = errands.enqueue(db, "nobody-runs-this", {}, queue=queue)
    tab = open_tab(sign_in_link, refusals=True)  # the deleted job's page ends in a 404
    open_job(tab, service, job)

    tab.locator("#job-delete").click()
    confirm(tab, f"Delete job {str(job)[-8:]}?", "Delete")

    expect(tab.locator("#result")).to_contain_text("Deleted 1 job.")
    expect(tab.locator("#job")).to_contain_text("No such job")
    assert states(db, queue, "100 years") == {}


def test_keeping_them_changes_nothing(
    console: Page, db: psycopg.Connection[Any], service: SyncServer, queue: str
) -> None:
    jobs = [errands.enqueue(db, "nobody-runs-this", {}, queue=queue) for _ in range(2)]
    show_queue(console, queue)
    expect(console.locator("#bulk-cancel")).to_have_text("Cancel 2")

    console.locator("#bulk-cancel").click()
    confirm(console, "Cancel 2 jobs?", "Keep them")

    expect(console.locator("#result")).to_be_hidden()
    assert states(db, queue) == {"queued": 2}
    assert all(event_types(db, job) == ["queued"] for job in jobs)


def test_bulk_actions_on_a_filtered_selection(
    console: Page, db: psycopg.Connection[Any], worker: ErrandsProcess, queue: str
) -> None:
    failing = {"succeed_on": 99}
    failed = [errands.enqueue(db, "flaky", failing, queue=queue, max_attempts=1) for _ in range(3)]
    completed = [errands.enqueue(db, "add", {"a": 1, "b": 2}, queue=queue) for _ in range(2)]
    queued = [errands.enqueue(db, "nobody-runs-this", {}, queue=queue) for _ in range(2)]
    other_queue = f"{queue}-other"
    untouched = errands.enqueue(db, "flaky", failing, queue=other_queue, max_attempts=1)
    wait_for(
        lambda: (
            states(db, queue) == {"failed": 3, "completed": 2, "queued": 2}
            and states(db, other_queue) == {"failed": 1}
        ),
        timeout=30,
        what="the worker to finish the jobs",
    )
    show_queue(console, queue)
    console.locator("[data-filter-state=failed]").click()
    expect(console.locator(ROWS)).to_have_count(3)

    # Retry every failed job of the queue.
    expect(console.locator("#bulk-retry")).to_have_text("Retry 3")
    console.locator("#bulk-retry").click()
    expect(console.locator("#confirm-body")).to_contain_text(f"queue {queue}")
    expect(console.locator("#confirm-body")).to_contain_text("3 failed jobs")
    confirm(console, "Retry 3 jobs?", "Retry")
    expect(console.locator("#result")).to_contain_text("Retried 3 jobs.")
    expect(console.locator("#result .result-ids a")).to_have_count(3)
    for job in failed:
        assert "retried" in event_types(db, job)
    assert "retried" not in event_types(db, untouched)
    wait_for(
        lambda: states(db, queue) == {"failed": 3, "completed": 2, "queued": 2},
        what="the retried jobs to fail again",
    )

    # Cancel what waits in the queue (the others are left alone, and the report says so).
    console.locator("[data-filter-state='']").click()
    expect(console.locator("#bulk-cancel")).to_have_text("Cancel 2")
    console.locator("#bulk-cancel").click()
    expect(console.locator("#confirm-body")).to_contain_text("2 queued jobs")
    confirm(console, "Cancel 2 jobs?", "Cancel")
    expect(console.locator("#result")).to_contain_text("Asked to cancel 2 jobs.")
    wait_for(lambda: all(event_types(db, job)[-1] == "cancelled" for job in queued))

    # Delete the completed ones: they leave the page live, and only they go.
    console.locator("[data-filter-state=completed]").click()
    expect(console.locator(ROWS)).to_have_count(2)
    console.locator("#bulk-delete").click()
    confirm(console, "Delete 2 jobs?", "Delete")
    expect(console.locator("#result")).to_contain_text("Deleted 2 jobs.")
    expect(console.locator(ROWS)).to_have_count(0)
    remaining = {
        job for (job,) in db.execute("SELECT id FROM background_jobs WHERE queue = %s", (queue,))
    }
    assert remaining == {*failed, *queued}
    assert not remaining & set(completed)
    expect(console.locator("[data-count=completed]")).to_have_text("0")


def test_bulk_retry_leaves_jobs_whose_unique_key_is_taken_and_says_so(
    console: Page, db: psycopg.Connection[Any], worker: ErrandsProcess, queue: str
) -> None:
    failing = {"succeed_on": 99}
    older = errands.enqueue(db, "flaky", failing, queue=queue, max_attempts=1, unique_key="nightly")
    wait_for(lambda: states(db, queue) == {"failed": 1}, timeout=30, what="the first to fail")
    newer = errands.enqueue(db, "flaky", failing, queue=queue, max_attempts=1, unique_key="nightly")
    wait_for(lambda: states(db, queue) == {"failed": 2}, timeout=30, what="both to fail")
    show_queue(console, queue)
    console.locator("[data-filter-state=failed]").click()
    expect(console.locator(ROWS)).to_have_count(2)

    console.locator("#bulk-retry").click()
    confirm(console, "Retry 2 jobs?", "Retry")

    result = console.locator("#result")
    expect(result).to_contain_text("Retried 1 job.")
    expect(result).to_contain_text("1 job left alone: an unfinished job holds its unique key")
    expect(result.locator(f".held a[href='#/jobs/{older}']")).to_be_visible()
    assert "retried" in event_types(db, newer)
    assert "retried" not in event_types(db, older)


def test_select_rows_and_act_on_them_only(
    console: Page, db: psycopg.Connection[Any], queue: str
) -> None:
    jobs = [errands.enqueue(db, "nobody-runs-this", {}, queue=queue) for _ in range(4)]
    show_queue(console, queue)
    expect(console.locator(ROWS)).to_have_count(4)
    for job in jobs[:2]:
        console.locator(f"{ROWS}[data-id='{job}'] input.select").check()
    expect(console.locator("#chosen")).to_have_text("2 selected")
    expect(console.locator("#bulk-cancel")).to_have_text("Cancel 2")

    console.locator("#bulk-cancel").click()
    confirm(console, "Cancel 2 selected jobs?", "Cancel")

    expect(console.locator("#result")).to_contain_text("Asked to cancel 2 jobs.")
    wait_for(lambda: states(db, queue) == {"cancelled": 2, "queued": 2}, what="the cancels")
    assert {event_types(db, j)[-1] for j in jobs[:2]} == {"cancelled"}
    assert {event_types(db, j)[-1] for j in jobs[2:]} == {"queued"}


def test_run_now_a_job_waiting_on_its_run_time(
    console: Page, db: psycopg.Connection[Any], service: SyncServer, queue: str
) -> None:
    job = errands.enqueue(db, "nobody-runs-this", {}, queue=queue)
    db.execute("UPDATE background_jobs SET run_at = now() + interval '1 day' WHERE id = %s", (job,))
    open_job(console, service, job)

    console.locator("#job-reschedule").click()
    confirm(console, f"Run now job {str(job)[-8:]}?", "Run now")

    expect(console.locator("#result")).to_contain_text("Made runnable now: 1 job.")
    rescheduled = console.locator("#events li[data-type=rescheduled]")
    expect(rescheduled).to_contain_text("by ops")
    due = db.execute("SELECT run_at <= now() FROM background_jobs WHERE id = %s", (job,))
    assert due.fetchone() == (True,)
