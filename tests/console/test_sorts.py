"""The jobs list in other orders than newest first: by state, kind, queue and run time,
through the real service's API and the console's column headers in Chromium."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import psycopg
import pytest
from playwright.sync_api import Page, expect

from tests.console.pages import ROWS

# kind, queue, state, run time in seconds (None: it never ran to an end)
JOBS = [
    ("k-b", "b", "completed", 5),
    ("k-a", "c", "failed", 1),
    ("k-c", "a", "completed", 30),
    ("k-a", "a", "queued", None),
    ("k-b", "c", "cancelled", None),
    ("k-c", "b", "failed", 12),
    ("k-a", "b", "completed", 2),
]


@pytest.fixture
def owner(db: psycopg.Connection[Any]) -> str:
    """An owner of this test's own, whose seven jobs (JOBS) were received a second
    apart, oldest first; none is for the worker (ended, or of a kind it lacks)."""
    name = f"sorter-{uuid.uuid4().hex[:8]}"
    for n, (kind, queue, state, ran) in enumerate(JOBS):
        db.execute(
            "INSERT INTO background_jobs (id, kind, queue, owner, state, received_at,"
            " started_at, finished_at, cancelled)"
            " VALUES (%s, %s, %s, %s, %s, now() - make_interval(secs => 10 - %s),"
            " CASE WHEN %s::float8 IS NOT NULL THEN now() - interval '1 hour' END,"
            " CASE WHEN %s::float8 IS NOT NULL"
            "   THEN now() - interval '1 hour' + make_interval(secs => %s::float8) END,"
            " %s)",
            (
                uuid.uuid4(),
                kind,
                f"{name}-{queue}",
                name,
                state,
                n,
                ran,
                ran,
                ran,
                state == "cancelled",
            ),
        )
    return name


def expected(db: psycopg.Connection[Any], owner: str, order: str) -> list[str]:
    """The owner's job ids in an order, as SQL sorts them."""
    rows = db.execute(
        "SELECT id::text FROM background_jobs j WHERE owner = %s"
        " AND ("
        + (
            "finished_at IS NOT NULL AND started_at IS NOT NULL"
            if "started_at" in order
            else "true"
        )
        + ")"
        f" ORDER BY {order}",
        (owner,),
    ).fetchall()
    return [row[0] for row in rows]


ORDERS = {
    "kind": "kind, received_at, id",
    "-kind": "kind DESC, received_at DESC, id DESC",
    "queue": "queue, received_at, id",
    "-state": "state DESC, received_at DESC, id DESC",
    "-run_time": "finished_at - started_at DESC, received_at DESC, id DESC",
    "run_time": "finished_at - started_at, received_at, id",
    "received": "received_at, id",
}


@pytest.mark.parametrize("sort", ORDERS)
def test_the_api_pages_through_every_order(
    operator: httpx.Client, db: psycopg.Connection[Any], owner: str, sort: str
) -> None:
    seen: list[str] = []
    params: dict[str, Any] = {"owners": owner, "sort": sort, "limit": 2}
    page = operator.get("/v1/admin/jobs", params=params).json()
    seen += [job["id"] for job in page["jobs"]]
    while page["older"]:
        page = operator.get("/v1/admin/jobs", params=params | {"after": page["older"]}).json()
        seen += [job["id"] for job in page["jobs"]]
    assert seen == expected(db, owner, ORDERS[sort]), (seen, page)
    back = operator.get("/v1/admin/jobs", params=params | {"before": page["newer"]}).json()
    assert [job["id"] for job in back["jobs"]] == seen[-4:-2] if len(seen) % 2 == 0 else seen[-3:-1]


def test_a_bad_sort_or_a_cursor_of_another_sort_gets_400(
    operator: httpx.Client, owner: str
) -> None:
    refused = operator.get("/v1/admin/jobs", params={"sort": "payload"})
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "validation_error"
    assert "sort" in refused.json()["error"]["message"]
    by_kind = operator.get("/v1/admin/jobs", params={"owners": owner, "sort": "kind", "limit": 2})
    cursor = by_kind.json()["older"]
    params = {"owners": owner, "sort": "queue", "after": cursor}
    other = operator.get("/v1/admin/jobs", params=params)
    assert other.status_code == 400
    assert other.json()["error"]["message"] == "this cursor is of the sort 'kind', not 'queue'"


def shown(tab: Page) -> list[str]:
    return list(tab.locator(ROWS).evaluate_all("rows => rows.map(r => r.dataset.id)"))


@pytest.mark.browser
def test_column_headers_sort_the_list_both_ways(
    console: Page, db: psycopg.Connection[Any], owner: str
) -> None:
    console.locator("#f-owner").fill(owner)
    expect(console.locator(ROWS)).to_have_count(len(JOBS))
    assert shown(console) == expected(db, owner, "received_at DESC, id DESC")

    kind = console.locator("th:has(button[data-sort=kind])")
    kind.locator("button").click()
    expect(kind).to_have_attribute("aria-sort", "ascending")
    assert "sort=kind" in console.url
    expect(console.locator(ROWS).first).to_have_attribute(
        "data-id", expected(db, owner, ORDERS["kind"])[0]
    )
    assert shown(console) == expected(db, owner, ORDERS["kind"])

    kind.locator("button").click()
    expect(kind).to_have_attribute("aria-sort", "descending")
    expect(console.locator(ROWS).first).to_have_attribute(
        "data-id", expected(db, owner, ORDERS["-kind"])[0]
    )
    assert shown(console) == expected(db, owner, ORDERS["-kind"])

    console.locator("button[data-sort=run_time]").click()  # longest first
    expect(console.locator(ROWS)).to_have_count(5)  # the two that never ran are not in it
    expect(kind).to_have_attribute("aria-sort", "none")
    assert shown(console) == expected(db, owner, ORDERS["-run_time"])

    received = console.locator("th:has(button[data-sort=received])")
    received.locator("button").click()  # back to the default: newest first
    expect(received).to_have_attribute("aria-sort", "descending")
    expect(console.locator(ROWS)).to_have_count(len(JOBS))
    assert "sort=" not in console.url
    assert shown(console) == expected(db, owner, "received_at DESC, id DESC")
    received.locator("button").click()
    expect(received).to_have_attribute("aria-sort", "ascending")
    expect(console.locator(ROWS).first).to_have_attribute(
        "data-id", expected(db, owner, "received_at, id")[0]
    )
    assert shown(console) == expected(db, owner, "received_at, id")
