"""The charts split by kind or by queue: each one's jobs finished per bucket, over a
day per 15 minutes (from the rollups), through the API and drawn in the console."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta

import httpx
import psycopg
import pytest
from playwright.sync_api import Page, expect

from errands.sync.auth import make_token
from errands.sync.console import sign_in_link
from tests.client.processes import SECRET, SyncServer
from tests.console.conftest import operator_client, scratch_database, sync_server

# (kind, queue, state, minutes ago it ended): 3 thumbnails in "media", 2 mails in "mail"
# (one failed), 1 report in "media" that ended 3 hours ago.
ENDED = [
    ("thumbnail", "media", "completed", 20),
    ("thumbnail", "media", "completed", 21),
    ("thumbnail", "media", "failed", 22),
    ("mail", "mail", "completed", 25),
    ("mail", "mail", "failed", 26),
    ("report", "media", "completed", 180),
]


@pytest.fixture(scope="module")
def split_database(server_url: str, template_db: str) -> Iterator[str]:
    yield from scratch_database(server_url, template_db)


@pytest.fixture(scope="module")
def split_service(split_database: str) -> Iterator[SyncServer]:
    with psycopg.connect(split_database, autocommit=True) as db, db.transaction():
        db.execute("SET LOCAL session_replication_role = replica")  # triggers off
        for kind, queue, state, ago in ENDED:
            db.execute(
                "WITH j AS (INSERT INTO background_jobs (id, kind, state, attempts, run_at,"
                " received_at, payload, max_attempts, priority, queue)"
                " VALUES (gen_random_uuid(), %(kind)s, %(state)s, 1, now() - %(start)s,"
                " now() - %(start)s, '{}', 3, 0, %(queue)s) RETURNING id)"
                " INSERT INTO job_events (job_id, at, type, attempt, worker)"
                " SELECT id, now() - %(start)s, 'queued', 0, 'w' FROM j UNION ALL"
                " SELECT id, now() - %(ran)s, 'started', 1, 'w' FROM j UNION ALL"
                " SELECT id, now() - %(ended)s, %(state)s, 1, 'w' FROM j",
                {
                    "kind": kind,
                    "queue": queue,
                    "state": state,
                    "start": timedelta(minutes=ago, seconds=2),
                    "ran": timedelta(minutes=ago, seconds=1),
                    "ended": timedelta(minutes=ago),
                },
            )
    yield from sync_server(split_database)


@pytest.fixture(scope="module")
def operator(split_service: SyncServer) -> Iterator[httpx.Client]:
    yield from operator_client(split_service)


def totals(answer: dict[str, object], key: str) -> dict[str, int]:
    groups = answer["groups"]
    assert isinstance(groups, dict)
    return {name: sum(b[key] for b in buckets) for name, buckets in groups.items()}


def test_a_day_split_by_kind_and_by_queue(operator: httpx.Client) -> None:
    day = {"minutes": 1440, "bucket": 900}
    by_kind = operator.get("/v1/admin/charts", params={**day, "split": "kind"}).json()
    assert by_kind["split"] == "kind"
    assert totals(by_kind, "completed") == {"thumbnail": 2, "mail": 1, "report": 1}
    assert totals(by_kind, "failed") == {"thumbnail": 1, "mail": 1, "report": 0}
    assert all(len(b) == len(by_kind["minutes"]) for b in by_kind["groups"].values())
    by_queue = operator.get("/v1/admin/charts", params={**day, "split": "queue"}).json()
    assert totals(by_queue, "completed") == {"media": 3, "mail": 1}
    # Every bucket's groups add up to the bucket.
    for i, bucket in enumerate(by_queue["minutes"]):
        assert bucket["completed"] == sum(b[i]["completed"] for b in by_queue["groups"].values())
    hour = operator.get("/v1/admin/charts", params={"split": "kind"}).json()
    assert totals(hour, "completed") == {"thumbnail": 2, "mail": 1}  # the report is older
    only_mail = operator.get("/v1/admin/charts", params={**day, "queue": "mail"}).json()
    assert sum(b["failed"] for b in only_mail["minutes"]) == 1


@pytest.mark.browser
def test_the_split_is_drawn(open_tab: Callable[..., Page], split_service: SyncServer) -> None:
    link = sign_in_link(split_service.url, make_token(SECRET, "ops", operator=True))
    console = open_tab(link)
    console.locator("#view-jobs[data-loaded=true]").wait_for()
    console.goto(f"{split_service.url}/console#/charts")
    view = console.locator("#view-charts[data-loaded=true]")
    expect(view.locator(".chart-card")).to_have_count(4)
    console.locator("#chart-window").select_option("24h")
    console.locator("#chart-split").select_option("kind")
    split = view.locator("[data-chart=split]")
    expect(split.locator("h2")).to_have_text(
        "Jobs finished per 15 minutes, by kind", timeout=30_000
    )
    expect(split.locator(".split-totals li")).to_have_text(["thumbnail 3", "mail 2", "report 1"])
    drawn: dict[str, int] = {}
    for title in split.locator("rect.bar title").all_text_contents():
        count, name = title.split(" · ")[1].split(" ", 1)
        drawn[name] = drawn.get(name, 0) + int(count)
    assert drawn == {"thumbnail": 3, "mail": 2, "report": 1}
    console.locator("#chart-split").select_option("")
    expect(view.locator(".chart-card")).to_have_count(4)
