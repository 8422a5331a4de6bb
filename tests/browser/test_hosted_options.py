"""The submit form's "Options" on the page ``errands server`` hosts, on errands.js: what
the form sets reaches the job's row in Postgres through the browser's replica, the same
unique key gives the same job, and a bad value is explained and submits nothing."""

from __future__ import annotations

import psycopg
import pytest
from playwright.sync_api import expect

from tests.browser.conftest import Session
from tests.helpers import wait_for
from tests.ui.test_page import job_id, submit
from tests.ui.test_page_options import (
    EXPECTED,
    GOOD,
    RUN_AT,
    check_bad_options_are_explained,
    fill_options,
    in_time_zone,
    stored_options,
)

pytestmark = pytest.mark.browser


def test_options_reach_the_job_in_postgres(session: Session, db: psycopg.Connection) -> None:
    page = session.open()
    in_time_zone(page)
    fill_options(page, GOOD, RUN_AT)
    row = submit(page, "primes", '{"n": 100}')
    job = job_id(row)
    assert wait_for(lambda: stored_options(db, job), what="the job in Postgres") == EXPECTED
    expect(row.locator(".cell-progress")).to_have_text("Queued")  # not before 2027

    page.get_by_role("button", name="Submit job").click()  # the same key: the same job
    short_id = row.locator(".job-id").text_content()
    expect(page.locator("#submit-note")).to_have_text(f"Submitted {short_id}.")
    owned = "SELECT id::text FROM background_jobs WHERE owner = %s"
    assert db.execute(owned, (session.user,)).fetchall() == [(job,)]


def test_bad_options_are_explained_and_nothing_is_submitted(
    session: Session, db: psycopg.Connection
) -> None:
    page = session.open()
    check_bad_options_are_explained(page)
    assert page.evaluate("window.errands.jobs({ limit: 50 })") == []
    assert page.evaluate("window.errands.status.pending") == 0
    owned = "SELECT count(*) FROM background_jobs WHERE owner = %s"
    assert db.execute(owned, (session.user,)).fetchone() == (0,)
