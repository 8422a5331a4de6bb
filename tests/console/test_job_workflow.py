"""A job's page in the console draws its workflow: the jobs it runs after (a link to
each, with its state, followed live) and its durable steps; Chromium against the real
``errands server``."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from playwright.sync_api import Page, expect

import errands

pytestmark = pytest.mark.browser


def test_a_jobs_page_shows_what_it_runs_after_and_its_steps(
    console: Page, db: psycopg.Connection[Any], queue: str
) -> None:
    first = errands.enqueue(db, "nobody-runs-this", {}, queue=queue)
    second = errands.enqueue(db, "nobody-runs-this", {}, queue=queue)
    job = errands.enqueue(db, "report", {}, queue=queue, after=[first, second])
    db.execute(
        "INSERT INTO job_steps (job_id, name, result, attempt) VALUES (%s, 'charge', '1', 1)",
        (job,),
    )
    db.execute("UPDATE background_jobs SET state = 'completed' WHERE id = %s", (first,))

    console.goto(f"{console.url.split('#')[0]}#/jobs/{job}")
    page = console.locator("#view-job[data-loaded=true]")
    dependencies = page.locator("#dependencies li")
    expect(dependencies).to_have_count(2)
    expect(dependencies.nth(0).locator(".badge")).to_have_text("completed")
    expect(dependencies.nth(1).locator(".badge")).to_have_text("queued")
    expect(page.locator("#job-waiting")).to_have_text("Waiting for 1 job.")
    expect(page.locator("#steps tbody tr")).to_have_count(1)
    expect(page.locator("#steps tbody tr td").first).to_have_text("charge")

    # The second one is cancelled: this job ends cancelled too, and the page follows.
    db.execute(
        "UPDATE background_jobs SET cancelled = true, state = 'cancelled' WHERE id = %s", (second,)
    )
    expect(page.locator("h1 .badge")).to_have_text("cancelled")
    expect(dependencies.nth(1).locator(".badge")).to_have_text("cancelled")
    expect(page.locator("#job-waiting")).to_have_text("Every one has ended.")

    dependencies.nth(0).locator("a").click()
    expect(console).to_have_url(f"{console.url.split('#')[0]}#/jobs/{first}")
    expect(console.locator("#view-job[data-loaded=true] .job-id")).to_have_text(str(first))
    expect(console.locator("#job-dependencies")).to_be_hidden()  # it runs after nothing
    expect(console.locator("#job-steps")).to_be_hidden()
