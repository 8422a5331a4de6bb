"""``/metrics`` scraped over HTTP from real processes: the numbers move with the work
done. And ``--log-format json``: every log line is a JSON object."""

from __future__ import annotations

import json
import uuid

import httpx
import psycopg

from tests.client.processes import SyncServer, token
from tests.helpers import wait_for
from tests.operations.jobs import make_job
from tests.operations.scrape import Samples, scrape, value
from tests.sync.api import JOBS, mutation, post, read

MUTATIONS = {"route": "/v1/mutations", "method": "POST"}
SHAPES = {"route": "/v1/shapes/{table}", "method": "GET"}


def rejections(samples: Samples) -> float:
    """Mutations counted under a rejection's code."""
    return sum(
        count
        for (name, labels), count in samples.items()
        if name == "errands_sync_mutations_total"
        and dict(labels)["outcome"] not in ("applied", "replayed")
    )


def test_the_sync_service_metrics_move_with_the_work(database_url: str) -> None:
    # --job-retention 0s: the maintenance loop prunes a finished job and logs it.
    server = SyncServer(
        database_url,
        "--log-format",
        "json",
        "--job-retention",
        "0s",
        "--prune-interval",
        "0.2",
        "--live-hold",
        "0.5",
    ).start()
    metrics_url = f"{server.url}/metrics"
    try:
        before = scrape(metrics_url)
        headers = {"Authorization": f"Bearer {token('alice')}"}
        with httpx.Client(base_url=server.url, headers=headers, timeout=30) as http:
            inserts = [mutation("insert", str(uuid.uuid4()), {"kind": "resize"}) for _ in range(3)]
            post(http, *inserts)
            post(http, inserts[0])  # a retry: replayed, not applied twice
            refused = mutation("update", inserts[1]["key"], {"kind": "other"})
            assert post(http, refused).results[0].status == "rejected"
            offset = read(http).offset
            live = http.get(JOBS, params={"offset": offset, "live": "true"})
            assert live.status_code == 200
            assert http.get("/v1/nowhere").status_code == 404
        with psycopg.connect(database_url, autocommit=True) as conn:
            make_job(conn, "completed")
        after = scrape(metrics_url)

        def moved(name: str, **labels: str) -> float:
            return value(after, name, **labels) - value(before, name, **labels)

        assert moved("errands_http_requests_total", status="200", **MUTATIONS) == 3
        assert moved("errands_http_requests_total", status="200", **SHAPES) == 2
        assert moved("errands_http_requests_total", route="unmatched", method="GET", status="404")
        assert moved("errands_http_request_duration_seconds_count", **MUTATIONS) == 3
        assert moved("errands_sync_mutations_total", outcome="applied") == 3
        assert moved("errands_sync_mutations_total", outcome="replayed") == 1
        assert rejections(after) - rejections(before) == 1  # counted under its code
        assert moved("errands_sync_shape_queries_total") >= 2
        assert moved("errands_sync_change_batches_total") >= 1
        assert value(after, "errands_sync_listening") == 1

        wait_for(lambda: '"pruned 1 finished jobs"' in server.process.output(), what="a log")
    finally:
        server.stop()
    records = [line for line in server.output.splitlines() if line.startswith("{")]
    parsed = [json.loads(line) for line in records]
    pruned = [r for r in parsed if r["message"] == "pruned 1 finished jobs"]
    assert pruned[0]["logger"] == "errands.sync"
    assert pruned[0]["level"] == "info"
    assert "Traceback" not in server.output
