"""The outage benchmark: how fast the sync service refuses while Postgres is away, and
how soon it serves again once Postgres is back.

    .venv/bin/python bench/outage_bench.py [--outages 2,5,10] [--runs 2]

An embedded Postgres (pgserver, in a temporary folder) and one ``errands server``
process. For each outage of T seconds: Postgres is stopped (``pg_ctl -m fast``: every
connection is cut at once, as in a failover); a shape read, a live read and an upload
are sent at once and timed (each must be a 503 ``database_unavailable``); after T
seconds Postgres is started again, and the time from ``pg_ctl start`` returning (Postgres accepts
connections) to the first shape read answered 200 is the resume time.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from errands.migrations import migrate
from errands.sync.auth import make_token

SECRET = "outage-bench-secret-0123456789abcdef01"
SHAPE = "/v1/shapes/background_jobs"
READY = re.compile(r"errands server listening on (http://\S+)")


def stop(server: Any) -> None:
    """Stop Postgres, cutting every connection."""
    from pgserver._commands import pg_ctl  # noqa: PLC0415

    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=server.pgdata, user=server.system_user)


def start(server: Any) -> None:
    """Start Postgres; return once it accepts connections."""
    with server._lock:
        server.ensure_postgres_running()


def start_service(url: str, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """``errands server`` on ``url``; the process and its address."""
    process = subprocess.Popen(
        [sys.executable, "-m", "errands", "server", "--database-url", url, "--port", "0",
         "--secret", SECRET],
        stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = READY.search(log.read_text())
        if found:
            return process, found[1]
        time.sleep(0.1)
    process.kill()
    raise SystemExit(f"the service did not start:\n{log.read_text()}")


def one_outage(pg: Any, http: httpx.Client, seconds: float) -> tuple[float, float]:
    """The slowest 503 while down and the resume time, for one outage."""
    offset = http.get(SHAPE, params={"offset": "-1"}).json()["offset"]
    upload = {"mutations": [{"id": str(uuid.uuid4()), "table": "background_jobs",
                             "op": "insert", "key": str(uuid.uuid4()),
                             "values": {"kind": "bench"}}]}  # fmt: skip
    stop(pg)
    down_at = time.monotonic()
    refusals = []
    for send in (
        lambda: http.get(SHAPE, params={"offset": offset}),
        lambda: http.get(SHAPE, params={"offset": offset, "live": "true"}),
        lambda: http.post("/v1/mutations", json=upload),
    ):
        started = time.monotonic()
        answer = send()
        refusals.append(time.monotonic() - started)
        if answer.status_code != 503:
            raise SystemExit(f"expected 503 while Postgres is away: {answer.status_code}")
    time.sleep(max(0.0, seconds - (time.monotonic() - down_at)))
    start(pg)
    back_at = time.monotonic()
    while http.get(SHAPE, params={"offset": offset}).status_code != 200:
        time.sleep(0.01)
    return max(refusals), time.monotonic() - back_at


def main() -> None:
    """Run the outages and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outages", default="2,5,10", help="outage lengths, seconds")
    parser.add_argument("--runs", type=int, default=2, help="runs per outage length")
    args = parser.parse_args()
    import pgserver  # noqa: PLC0415 -- heavy

    with tempfile.TemporaryDirectory(prefix="errands-outage-") as folder:
        pg = pgserver.get_server(Path(folder) / "pg", cleanup_mode="stop")
        url = str(pg.get_uri())
        migrate(url)
        process, address = start_service(url, Path(folder) / "server.log")
        token = make_token(SECRET, "bench")
        headers = {"Authorization": f"Bearer {token}"}
        try:
            with httpx.Client(base_url=address, headers=headers, timeout=60) as http:
                print("| outage | slowest 503 while away | served again after Postgres was back |")
                print("|---|---|---|")
                for seconds in (float(s) for s in args.outages.split(",")):
                    for _ in range(args.runs):
                        refused, resumed = one_outage(pg, http, seconds)
                        print(f"| {seconds:g} s | {refused * 1000:.0f} ms | {resumed:.2f} s |")
        finally:
            process.kill()
            process.wait()
            pg.cleanup()


if __name__ == "__main__":
    main()
