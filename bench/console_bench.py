"""The console at a million jobs, measured in Chromium.

    .venv/bin/python bench/console_bench.py [--jobs 1000000] [--runs 3] [--database-url URL]

A fresh database is filled in SQL (generate_series) with ``--jobs`` jobs received over
the last 7 days (90% completed, 5% failed, 2% cancelled, 2% queued, 1% running; 10
kinds, 4 queues, 1,000 owners) and their events (queued, started and how each ended: 3
a finished job), then vacuumed and analysed as autovacuum would leave it. One ``errands
server`` serves it; Chromium (Debian's, driven by Playwright) signs in to the console
through an operator's link and is measured:

- **usable**: from the navigation to the list's first page and its counts drawn (the
  view's ``data-loaded``), the default filter (received in the last 24 hours);
- **JS heap**: the tab's used JS heap after a garbage collection (CDP);
- **filter change**: from changing the address's filter (state failed; kind; queue;
  a search that matches one job, the worst case) to the new page and counts drawn;
- **older page**: the next page down, five pages deep;
- **sorts**: the list by state, kind, queue or run time (a filter change, as above);
- **charts**: ``GET /v1/admin/charts`` over an hour, a day and a week (and a week split
  by kind), timed over HTTP; the first call rolls up every event of the week.

Each is the median of ``--runs`` runs; the server's counts say which are estimates.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
from playwright.sync_api import Page, sync_playwright

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from errands.sync.auth import make_token  # noqa: E402
from errands.sync.console import sign_in_link  # noqa: E402
from hostile_bench import sync_server  # noqa: E402 -- after the path is set
from sync_bench import fresh_database, server_url  # noqa: E402

SECRET = "hostile-bench-secret-0123456789abcdef01"  # hostile_bench's server uses it
CHROMIUM = "/usr/bin/chromium"

FILL = """
ALTER TABLE background_jobs DISABLE TRIGGER USER;
INSERT INTO background_jobs (
    id, "timestamp", received_at, kind, owner, queue, state, payload, result, error,
    attempts, max_attempts, priority, run_at, started_at, finished_at, progress, completed
)
SELECT gen_random_uuid(), at, at, 'kind-' || (n %% 10), 'user-' || (n %% 1000),
       'queue-' || (n %% 4), state,
       jsonb_build_object('n', n, 'file', 'photo-' || n || '.jpg'),
       CASE WHEN state = 'completed' THEN jsonb_build_object('pixels', n * 7) END,
       CASE WHEN state = 'failed'
            THEN jsonb_build_object('type', 'OSError', 'message', 'disk full on ' || n) END,
       CASE WHEN state = 'queued' THEN 0 ELSE 1 END, 3, 0, at,
       CASE WHEN state <> 'queued' THEN at + interval '1 second' END,
       CASE WHEN state IN ('completed', 'failed', 'cancelled')
            THEN at + interval '3 seconds' END,
       CASE WHEN state = 'completed' THEN 1 ELSE 0 END, state = 'completed'
FROM (
    SELECT n, now() - (%(jobs)s - n) * (interval '7 days' / %(jobs)s) AS at,
           CASE WHEN n %% 100 < 90 THEN 'completed' WHEN n %% 100 < 95 THEN 'failed'
                WHEN n %% 100 < 97 THEN 'cancelled' WHEN n %% 100 < 99 THEN 'queued'
                ELSE 'running' END AS state
    FROM generate_series(1, %(jobs)s) AS n
) AS made;
INSERT INTO job_events (job_id, at, type, attempt)
SELECT j.id, j.received_at, 'queued', 0 FROM background_jobs j;
INSERT INTO job_events (job_id, at, type, attempt)
SELECT j.id, j.started_at, 'started', 1 FROM background_jobs j WHERE j.started_at IS NOT NULL;
INSERT INTO job_events (job_id, at, type, attempt)
SELECT j.id, j.finished_at, j.state, 1 FROM background_jobs j WHERE j.finished_at IS NOT NULL;
ALTER TABLE background_jobs ENABLE TRIGGER USER;
"""


def fill(database_url: str, jobs: int) -> float:
    """Fill the database; seconds it took (vacuum and analyse included)."""
    started = time.monotonic()
    with psycopg.connect(database_url, autocommit=True) as conn:
        with conn.transaction():
            for statement in FILL.split(";\n"):
                if "%(jobs)s" in statement:
                    conn.execute(statement, {"jobs": jobs})
                elif statement.strip():
                    conn.execute(statement)
        conn.execute("VACUUM (ANALYZE) background_jobs")
        conn.execute("VACUUM (ANALYZE) job_events")
    return time.monotonic() - started


def loaded(tab: Page) -> None:
    """Wait for the list's page and counts to be drawn."""
    tab.locator("#view-jobs[data-loaded=true]").wait_for(timeout=120_000)


LOADS = "() => document.querySelector('#view-jobs').dataset.loads"


def go(tab: Page, query: str) -> None:
    """Change the address's filter, as the form does, and wait for the answer (the
    view counts the pages it drew in data-loads)."""
    before = tab.evaluate(LOADS)
    tab.evaluate("q => { location.hash = '#/jobs?' + q; }", query)
    tab.wait_for_function(f"() => ({LOADS})() !== {before!r}", timeout=120_000)


def older(tab: Page) -> None:
    before = tab.evaluate(LOADS)
    tab.locator("#page-older").click()
    tab.wait_for_function(f"() => ({LOADS})() !== {before!r}", timeout=120_000)


def heap_mb(tab: Page) -> float:
    cdp = tab.context.new_cdp_session(tab)
    cdp.send("HeapProfiler.collectGarbage")
    used = cdp.send("Runtime.getHeapUsage")["usedSize"]
    cdp.detach()
    return float(used) / 2**20


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            yield browser
        finally:
            browser.close()


def median(values: list[float]) -> str:
    return (
        f"{statistics.median(values) * 1000:,.0f} ms (runs: "
        + ", ".join(f"{v * 1000:,.0f}" for v in values)
        + ")"
    )


FILTERS = {
    "state = failed": "state=failed",
    "kind = kind-3": "kind=kind-3",
    "queue = queue-2, state = queued": "queue=queue-2&state=queued",
    "owner = user-7 (any time)": "owner=user-7&range=all",
    "search matching one job (any time)": "q=photo-4242.jpg&range=all",
    "sort by state": "sort=state",
    "sort by kind": "sort=kind",
    "sort by queue (any time)": "sort=queue&range=all",
    "sort by run time, longest first (any time)": "sort=-run_time&range=all",
}

CHARTS = {
    "last hour, per minute": {"minutes": 60, "bucket": 60},
    "last 24 hours, per 15 minutes": {"minutes": 1440, "bucket": 900},
    "last 7 days, per hour": {"minutes": 10080, "bucket": 3600},
    "last 7 days, per hour, by kind": {"minutes": 10080, "bucket": 3600, "split": "kind"},
}


def chart_times(url: str, runs: int) -> dict[str, list[float]]:
    """GET /v1/admin/charts for each window, ``runs`` times, interleaved; the first
    call rolls up the 7 days of events (the catch-up after an upgrade)."""
    token = make_token(SECRET, "bench", operator=True)
    figures: dict[str, list[float]] = {"first chart (rolls up 7 days)": []}
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as http:
        started = time.monotonic()
        http.get("/v1/admin/charts", timeout=3600).raise_for_status()
        figures["first chart (rolls up 7 days)"].append(time.monotonic() - started)
        for _ in range(runs):
            for name, params in CHARTS.items():
                started = time.monotonic()
                http.get("/v1/admin/charts", params=params, timeout=600).raise_for_status()
                figures.setdefault(name, []).append(time.monotonic() - started)
    return figures


def one_run(browser: Any, link: str, figures: dict[str, list[float]]) -> None:
    """Sign in, then change the filter and page down; add each figure."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    started = time.monotonic()
    tab.goto(link)
    loaded(tab)
    figures["usable"].append(time.monotonic() - started)
    heap = heap_mb(tab)
    for name, query in FILTERS.items():
        started = time.monotonic()
        go(tab, query)
        figures[name].append(time.monotonic() - started)
        go(tab, "range=24h")  # the default again
    for _ in range(5):
        started = time.monotonic()
        older(tab)
        figures["older page"].append(time.monotonic() - started)
    figures["heap"].append(max(heap, heap_mb(tab)))
    context.close()


def measure(url: str, runs: int) -> dict[str, list[float]]:
    """Every figure of ``runs`` runs, each in a fresh browser context."""
    link = sign_in_link(url, make_token(SECRET, "bench", operator=True))
    figures: dict[str, list[float]] = {"usable": [], "heap": [], "older page": []}
    for name in FILTERS:
        figures[name] = []
    with chromium() as browser:
        for _ in range(runs):
            one_run(browser, link, figures)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--database-url", help="a Postgres server's maintenance database")
    args = parser.parse_args()
    with fresh_database(server_url(args.database_url)) as database_url:
        seconds = fill(database_url, args.jobs)
        with psycopg.connect(database_url) as conn:
            events = conn.execute("SELECT count(*) FROM job_events").fetchone()
        made = events[0] if events else 0
        print(f"filled {args.jobs:,} jobs and {made:,} events in {seconds:.0f} s")
        with sync_server(database_url) as url:
            figures = measure(url, args.runs)
            charts = chart_times(url, args.runs)
    heap = figures.pop("heap")
    print(
        f"JS heap (after GC, the larger of after load / after every step): "
        f"{statistics.median(heap):.1f} MB (runs: {', '.join(f'{h:.1f}' for h in heap)})"
    )
    for name, values in figures.items():
        label = name if name in {"usable", "older page"} else f"filter: {name}"
        print(f"{label}: {median(values)}")
    for name, values in charts.items():
        print(f"chart: {name}: {median(values)}")


if __name__ == "__main__":
    main()
