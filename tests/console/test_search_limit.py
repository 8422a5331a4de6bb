"""A search in payloads, results and errors is bounded in time: past the limit the
operator is told to narrow it (422 search_too_broad), and the console shows that.
(Quick searches under the default limit: tests/console/test_api.py and test_jobs.py.)"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import psycopg
import pytest
from playwright.sync_api import Page, expect

from errands.sync.auth import make_token
from errands.sync.console import sign_in_link
from tests.client.processes import SECRET, SyncServer
from tests.console.conftest import operator_client, scratch_database

JOBS = 30_000  # a search reads every one that does not match: far past 1 ms


@pytest.fixture(scope="module")
def service(server_url: str, template_db: str) -> Iterator[SyncServer]:
    for database in scratch_database(server_url, template_db):
        with psycopg.connect(database, autocommit=True) as conn, conn.transaction():
            conn.execute("SET LOCAL session_replication_role = replica")  # triggers off
            conn.execute(
                "INSERT INTO background_jobs (id, kind, state, attempts, run_at, received_at,"
                " payload, max_attempts, priority, queue)"
                " SELECT gen_random_uuid(), 'resize', 'completed', 1, now(), now(),"
                " jsonb_build_object('file', 'p-' || n), 3, 0, 'default'"
                " FROM generate_series(1, %s) AS n",
                (JOBS,),
            )
        server = SyncServer(database, env={"ERRANDS_SEARCH_SECONDS": "0.001"}).start()
        yield server
        server.stop()


@pytest.fixture(scope="module")
def operator(service: SyncServer) -> Iterator[httpx.Client]:
    yield from operator_client(service)


def test_a_search_past_its_limit_is_told_to_narrow(operator: httpx.Client) -> None:
    page = operator.get("/v1/admin/jobs")
    assert page.status_code == 200  # no search: no limit
    assert len(page.json()["jobs"]) == 50
    for route in ("/v1/admin/jobs", "/v1/admin/counts"):
        answer = operator.get(route, params={"search": "no such text"})
        assert answer.status_code == 422, answer.text
        error = answer.json()["error"]
        assert error["code"] == "search_too_broad"
        assert "narrow the time window" in error["message"]
    # The connection went back to the pool in a good state: the next page answers.
    assert operator.get("/v1/admin/jobs").status_code == 200


@pytest.mark.browser
def test_the_console_says_to_narrow_the_search(
    open_tab: Callable[..., Page], service: SyncServer
) -> None:
    link = sign_in_link(service.url, make_token(SECRET, "ops", operator=True))
    console = open_tab(link, refusals=True)  # the 422s are what this test is about
    console.locator("#view-jobs[data-loaded=true]").wait_for()
    console.evaluate("() => { location.hash = '#/jobs?q=no+such+text&range=all'; }")
    expect(console.get_by_text("narrow the time window", exact=False).first).to_be_visible()
    # The last filter's rows and counts go: the bulk buttons cannot act on them.
    expect(console.locator("#jobs-body tr")).to_have_count(1)
    expect(console.locator("#jobs-body")).to_contain_text("Nothing shown: the search read")
    expect(console.locator("#bulk-delete")).to_be_disabled()
