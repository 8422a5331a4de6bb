"""The console's charts: the last hour of ``job_events`` per minute, computed in SQL
(checked against a history written event by event, with its numbers worked out by
hand), and drawn as SVG in Chromium."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest
from playwright.sync_api import Page, expect
from psycopg.types.json import Jsonb

from errands.sync.auth import make_token
from errands.sync.console import sign_in_link
from tests.client.processes import SECRET, SyncServer
from tests.console.conftest import operator_client, scratch_database, sync_server

SECOND = timedelta(seconds=1)
# The charts' percentiles come from log-scale histograms (errands.charts: buckets a
# factor of the square root of two apart), so each is within 19% of the sample at its
# rank (nearest rank), not the interpolated percentile.
PICKUP = pytest.approx([1.0, 3.0, 3.0], rel=0.19)
"""p50, p95, p99 of the pickup latencies below: [0.5, 1, 1, 1, 1, 3] seconds."""
RUN = pytest.approx([2.0, 4.0, 4.0], rel=0.19)
"""p50, p95, p99 of the run times below: [1, 1.5, 2, 3, 3.5, 4] seconds."""


@pytest.fixture(scope="module")
def charts_database(server_url: str, template_db: str) -> Iterator[str]:
    """A database of the charts' own: they count every job_event of the last hour."""
    yield from scratch_database(server_url, template_db)


@pytest.fixture(scope="module")
def charts_service(charts_database: str) -> Iterator[SyncServer]:
    """``errands server`` on the charts' database."""
    yield from sync_server(charts_database)


@pytest.fixture(scope="module")
def operator(charts_service: SyncServer) -> Iterator[httpx.Client]:
    """An HTTP client of the charts' service with an operator's token."""
    yield from operator_client(charts_service)


@pytest.fixture(scope="module")
def history(charts_database: str) -> datetime:
    """A known history, written with the triggers off so that every event is exactly
    where it is put. ``base`` is the start of the minute ten minutes ago:

    * A: queued +1 s, started +4 s, completed +7 s;
    * B: queued +10 s, started +11 s, failed and retried +13 s (backoff to +20 s, the
      row's run_at), started +21 s, failed +25 s;
    * F: queued +30 s, started +31 s, retried +32 s (retry_in 3 s), started +35.5 s,
      retried +37 s (retry_in 2 s, so run_at +39 s), started +40 s, completed +43.5 s;
    * C: queued +65 s, cancelled +70 s (never ran);
    * D: queued +90 s, still waiting;
    * E: queued two hours ago, still waiting (its event is older than the charts).
    """
    with psycopg.connect(charts_database, autocommit=True) as db:
        (now,) = db.execute("SELECT date_trunc('minute', now())").fetchone() or ()
        base = now - timedelta(minutes=10)

        def job(name: str, state: str, attempts: int, run_at: datetime, *events: Any) -> None:
            (job_id,) = (
                db.execute(
                    # Triggers are off: every NOT NULL column without a default is given.
                    "INSERT INTO background_jobs (id, kind, state, attempts, run_at, received_at,"
                    " payload, max_attempts, priority, queue)"
                    " VALUES (gen_random_uuid(), 'chart', %s, %s, %s, %s, %s, 3, 0, 'default')"
                    " RETURNING id",
                    (state, attempts, run_at, events[0][1], Jsonb(name)),
                ).fetchone()
                or ()
            )
            for kind, at, attempt, *error in events:
                db.execute(
                    "INSERT INTO job_events (job_id, at, type, attempt, worker, error)"
                    " VALUES (%s, %s, %s, %s, 'w', %s)",
                    (job_id, at, kind, attempt, Jsonb(error[0]) if error else None),
                )

        def at(seconds: float) -> datetime:
            return base + seconds * SECOND

        with db.transaction():
            db.execute("SET LOCAL session_replication_role = replica")  # triggers off
            job(
                "A",
                "completed",
                1,
                at(1),
                ("queued", at(1), 0),
                ("started", at(4), 1),
                ("completed", at(7), 1),
            )
            job(
                "B",
                "failed",
                2,
                at(20),
                ("queued", at(10), 0),
                ("started", at(11), 1),
                ("retried", at(13), 1),
                ("started", at(21), 2),
                ("failed", at(25), 2),
            )
            job(
                "F",
                "completed",
                3,
                at(39),
                ("queued", at(30), 0),
                ("started", at(31), 1),
                ("retried", at(32), 1, {"retry_in": 3}),
                ("started", at(35.5), 2),
                ("retried", at(37), 2, {"retry_in": 2}),
                ("started", at(40), 3),
                ("completed", at(43.5), 3),
            )
            job("C", "cancelled", 0, at(65), ("queued", at(65), 0), ("cancelled", at(70), 0))
            job("D", "queued", 0, at(90), ("queued", at(90), 0))
            old = now - timedelta(hours=2)
            job("E", "queued", 0, old, ("queued", old, 0))
    return base


def test_the_charts_are_computed_from_job_events(operator: httpx.Client, history: datetime) -> None:
    charts = operator.get("/v1/admin/charts").json()
    minutes = {datetime.fromisoformat(m["minute"]): m for m in charts["minutes"]}
    assert len(charts["minutes"]) == 60
    first, second = minutes[history], minutes[history + timedelta(minutes=1)]
    # Pickup latency: A 3 s; B 1 s (queued +10, started +11), then 1 s from the row's
    # run_at (+20), not from the retry (+13); F 1 s, then 0.5 s from the retry's end
    # (+32 + 3 s), then 1 s from run_at (+39). Run times: A 3; B 2, 4; F 1, 1.5, 3.5.
    # percentile_cont interpolates: p95 of [0.5, 1, 1, 1, 1, 3] is 1 + 0.75 * (3 - 1).
    assert first == {
        "minute": first["minute"],
        "completed": 2,
        "failed": 1,
        "cancelled": 0,
        "retried": 3,
        "queued": 1,  # E (A, B and F left, C not yet queued)
        "pickups": 6,
        "pickup_seconds": PICKUP,
        "runs": 6,
        "run_seconds": RUN,
    }
    assert second == {
        "minute": second["minute"],
        "completed": 0,
        "failed": 0,
        "cancelled": 1,
        "retried": 0,
        "queued": 2,  # E and D (C was cancelled)
        "pickups": 0,
        "pickup_seconds": None,
        "runs": 0,
        "run_seconds": None,
    }
    before = [m for t, m in minutes.items() if t < history]
    after = [m for t, m in minutes.items() if t > history + timedelta(minutes=1)]
    assert {m["queued"] for m in before} == {1}  # E alone, all along
    assert {m["queued"] for m in after} == {2}
    assert all(m["completed"] + m["failed"] + m["cancelled"] == 0 for m in before + after)
    assert charts["totals"] == {
        "pickups": 6,
        "pickup_seconds": PICKUP,
        "runs": 6,
        "run_seconds": RUN,
    }
    shorter = operator.get("/v1/admin/charts", params={"minutes": 5}).json()
    assert len(shorter["minutes"]) == 5
    assert shorter["totals"]["pickups"] == 0  # the history is ten minutes old


@pytest.mark.browser
def test_the_charts_are_drawn(
    open_tab: Callable[..., Page], charts_service: SyncServer, history: datetime
) -> None:
    link = sign_in_link(charts_service.url, make_token(SECRET, "ops", operator=True))
    console = open_tab(link)
    console.locator("#view-jobs[data-loaded=true]").wait_for()
    console.goto(f"{charts_service.url}/console#/charts")
    view = console.locator("#view-charts[data-loaded=true]")
    expect(view.locator(".chart-card")).to_have_count(4)

    finished = view.locator("[data-chart=finished]")
    expect(finished.locator(".stat-value")).to_have_text("4")
    bars = finished.locator("rect.bar")
    expect(bars).to_have_count(4)  # completed, failed, retried; then cancelled
    titles = [t.split(" · ")[1] for t in bars.locator("title").all_text_contents()]
    assert sorted(titles) == ["1 cancelled", "1 failed", "2 completed", "3 retried"]

    depth = view.locator("[data-chart=depth]")
    expect(depth.locator(".stat-value")).to_have_text("2")
    expect(depth.locator("circle.dot")).to_have_count(60)

    pickup = view.locator("[data-chart=pickup] .stat-value")
    # A histogram bucket's middle: 0.86 s holds the 1 s sample, 3.4 s the 3 s one.
    expect(pickup).to_have_text(["861 ms", "3.4 s", "3.4 s", "6"])
    runtime = view.locator("[data-chart=runtime] .stat-value")
    expect(runtime).to_have_text(["1.7 s", "3.4 s", "3.4 s", "6"])
    # One minute had attempts: one dot per percentile line.
    expect(view.locator("[data-chart=runtime] circle.dot")).to_have_count(2)
    assert view.locator("svg.chart").count() == 4

    # The same history over a week, an hour a bar: the four finished jobs in one hour.
    console.locator("#chart-window").select_option("7d")
    expect(console.locator("#charts-title")).to_have_text("The last 7 days")
    expect(depth.locator("circle.dot")).to_have_count(168)
    expect(finished.locator(".stat-value")).to_have_text("4")


def test_charts_over_a_day_and_a_week(operator: httpx.Client) -> None:
    day = operator.get("/v1/admin/charts", params={"minutes": 1440, "bucket": 900})
    assert day.status_code == 200, day.text
    buckets = [datetime.fromisoformat(m["minute"]) for m in day.json()["minutes"]]
    assert len(buckets) == 96
    assert {b - a for a, b in itertools.pairwise(buckets)} == {timedelta(minutes=15)}
    week = operator.get("/v1/admin/charts", params={"minutes": 10080, "bucket": 3600}).json()
    assert len(week["minutes"]) == 168
    refused = operator.get("/v1/admin/charts", params={"minutes": 10080, "bucket": 60})
    assert refused.status_code == 400
    assert "at most" in refused.json()["error"]["message"]
