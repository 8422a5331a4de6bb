"""``/metrics`` scraped over HTTP from real processes (the sync service and a worker):
the numbers move with the work done. And ``--log-format json`` on both."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import psycopg

import errands
from tests.client.processes import SyncServer, free_port, token
from tests.helpers import ErrandsProcess, wait_for
from tests.operations.jobs import make_job
from tests.operations.scrape import Samples, scrape, value
from tests.sync.api import JOBS, mutation, post, read

Conn = psycopg.Connection[Any]
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
            # Refused before routing (the token is checked first): counted under its route.
            bad = {"Authorization": "Bearer not-a-token"}
            assert http.get("/v1/admin/workers", headers=bad).status_code == 401
        with psycopg.connect(database_url, autocommit=True) as conn:
            make_job(conn, "completed")
        after = scrape(metrics_url)

        def moved(name: str, **labels: str) -> float:
            return value(after, name, **labels) - value(before, name, **labels)

        assert moved("errands_http_requests_total", status="200", **MUTATIONS) == 3
        assert moved("errands_http_requests_total", status="200", **SHAPES) == 2
        assert moved("errands_http_requests_total", route="unmatched", method="GET", status="404")
        admin = {"route": "/v1/admin/workers", "method": "GET", "status": "401"}
        assert moved("errands_http_requests_total", **admin) == 1
        assert not moved("errands_http_requests_total", route="unmatched", status="401")
        assert moved("errands_http_request_duration_seconds_count", **MUTATIONS) == 3
        assert moved("errands_sync_mutations_total", outcome="applied") == 3
        assert moved("errands_sync_mutations_total", outcome="replayed") == 1
        assert rejections(after) - rejections(before) == 1  # counted under its code
        assert moved("errands_sync_shape_queries_total") >= 1  # the plain read
        assert moved("errands_sync_change_queries_total") >= 1  # what the live read waited on
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


def test_the_worker_metrics_move_with_the_work(database_url: str, conn: Conn) -> None:
    port = free_port()
    worker = ErrandsProcess(
        "worker",
        "tests.worker.handlers:registry",
        "--database-url",
        database_url,
        "--poll-interval",
        "0.1",
        "--lease",
        "1.2",
        "--metrics-port",
        str(port),
        "--log-format",
        "json",
    )
    metrics_url = f"http://127.0.0.1:{port}/metrics"
    try:
        worker.wait_for_output("metrics at http://127.0.0.1:", timeout=30)
        before = scrape(metrics_url)
        added = [errands.enqueue(conn, "add", {"a": i, "b": 1}) for i in range(3)]
        flaky = errands.enqueue(conn, "flaky", {"succeed_on": 2})
        for _ in range(4):  # nobody handles it: it waits in the queue
            errands.enqueue(conn, "unknown", queue="elsewhere")
        for job_id in [*added, flaky]:
            assert errands.wait(conn, job_id, timeout=60).state == "completed"
        wait_for(lambda: value(scrape(metrics_url), "errands_worker_jobs_running") == 0)
        after = scrape(metrics_url)

        def moved(name: str, **labels: str) -> float:
            return value(after, name, **labels) - value(before, name, **labels)

        assert moved("errands_worker_jobs_claimed_total", kind="add") == 3
        assert moved("errands_worker_jobs_claimed_total", kind="flaky") == 2
        assert moved("errands_worker_jobs_finished_total", kind="add", state="completed") == 3
        assert moved("errands_worker_jobs_finished_total", kind="flaky", state="queued") == 1
        assert moved("errands_worker_jobs_finished_total", kind="flaky", state="completed") == 1
        assert moved("errands_worker_job_run_seconds_count", kind="add") == 3
        assert moved("errands_worker_pickup_latency_seconds_count", kind="flaky") == 2
        # No worker serves "elsewhere": it is counted under "other".
        assert value(after, "errands_queue_depth", queue="other") == 4
        assert value(after, "errands_queue_oldest_age_seconds", queue="other") > 0
        renewed = value(after, "errands_worker_lease_renewals_total")
        wait_for(
            lambda: value(scrape(metrics_url), "errands_worker_lease_renewals_total") > renewed,
            what="another heartbeat",
        )
    finally:
        worker.stop()
        output = worker.output()
        worker.close()
    records = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    assert any(
        r["message"].startswith("worker ") and r["logger"] == "errands.worker" for r in records
    )
    assert "Traceback" not in output


def test_queues_clients_invent_share_one_label(database_url: str, conn: Conn) -> None:
    """5,000 queue names from one user: the worker's /metrics names only the queues
    workers serve, and sums the rest under ``other`` (before: a label each)."""
    conn.execute(
        "INSERT INTO background_jobs (id, kind, owner, queue)"
        " SELECT gen_random_uuid(), 'k', 'mallory', 'q' || n FROM generate_series(1, 5000) n"
    )
    errands.enqueue(conn, "add", {"a": 1, "b": 1}, queue="served")
    port = free_port()
    worker = ErrandsProcess(
        "worker",
        "tests.worker.handlers:registry",
        "--database-url",
        database_url,
        "--queue",
        "served",
        "--queue",
        "default",
        "--metrics-port",
        str(port),
    )
    try:
        worker.wait_for_output("metrics at http://127.0.0.1:", timeout=30)
        url = f"http://127.0.0.1:{port}/metrics"

        def invented_alone() -> Samples | None:
            # The job in "served" counts under "other" only until the worker's lease
            # lists its queues (and it is soon run): wait for the 5,000 invented ones.
            found = scrape(url)
            return found if value(found, "errands_queue_depth", queue="other") == 5000 else None

        samples = wait_for(invented_alone, timeout=30)
    finally:
        worker.close()
    labelled = {
        dict(labels)["queue"]
        for (name, labels), _ in samples.items()
        if name == "errands_queue_scheduled"
    }
    assert "other" in labelled
    assert len(labelled) <= 50
    assert value(samples, "errands_queue_depth", queue="other") == 5000
