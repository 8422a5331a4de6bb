"""The page ``errands server`` hosts, when the server refuses a job at the door: the
job's row says why, with the same code and message ``errands submit`` prints."""

from __future__ import annotations

import psycopg
import pytest
from playwright.sync_api import expect

from tests.browser.conftest import Session
from tests.ui.test_page import job_id, submit

pytestmark = pytest.mark.browser


def test_a_payload_the_kinds_schema_refuses_is_shown_refused(
    session: Session, db: psycopg.Connection
) -> None:
    page = session.open()
    row = submit(page, "primes", '{"n": "many"}')  # the demo's primes takes an integer n
    expect(row.locator(".state-failed")).to_contain_text("Rejected")
    expect(row.locator(".result-error")).to_contain_text("validation_error")
    expect(row.locator(".result-error")).to_contain_text("payload.n")
    found = db.execute("SELECT 1 FROM background_jobs WHERE id = %s", (job_id(row),))
    assert found.fetchone() is None  # never queued
