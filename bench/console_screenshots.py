"""The console's screenshots in docs/, taken on the console benchmark's data.

    .venv/bin/python bench/console_screenshots.py [--jobs 100000] [--database-url URL]

Fills a fresh database as bench/console_bench.py does (``--jobs`` jobs over 7 days,
their events), serves it with ``errands server`` and saves, from Debian's Chromium:
docs/console.png (the jobs list sorted by run time, two rows ticked) and
docs/console-charts.png (the last 24 hours split by kind).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from console_bench import SECRET, chromium, fill, loaded  # noqa: E402
from errands.sync.auth import make_token  # noqa: E402
from errands.sync.console import sign_in_link  # noqa: E402
from hostile_bench import sync_server  # noqa: E402
from sync_bench import fresh_database, server_url  # noqa: E402

DOCS = ROOT / "docs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--database-url", help="a Postgres server's maintenance database")
    args = parser.parse_args()
    with fresh_database(server_url(args.database_url)) as database_url:
        fill(database_url, args.jobs)
        with sync_server(database_url) as url, chromium() as browser:
            tab = browser.new_context(viewport={"width": 1280, "height": 820}).new_page()
            tab.goto(sign_in_link(url, make_token(SECRET, "ann", operator=True)))
            loaded(tab)
            tab.locator('button.sort[data-sort="run_time"]').click()
            tab.wait_for_selector('th[aria-sort="descending"] button[data-sort="run_time"]')
            loaded(tab)
            for row in tab.locator("#jobs-body tr input[type=checkbox]").all()[1:3]:
                row.check()
            tab.screenshot(path=DOCS / "console.png")
            tab.goto(f"{url}/console#/charts")
            tab.locator("#view-charts[data-loaded=true]").wait_for(timeout=600_000)
            tab.locator("#chart-window").select_option("24h")
            tab.locator("#chart-split").select_option("kind")
            tab.locator("[data-chart=split] rect.bar").first.wait_for(timeout=120_000)
            tab.screenshot(path=DOCS / "console-charts.png", full_page=True)
    print("saved docs/console.png and docs/console-charts.png")


if __name__ == "__main__":
    main()
