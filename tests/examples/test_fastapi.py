"""examples/fastapi: the app under uvicorn and ``errands worker invoices:registry``, real
processes on the test's database. An order enqueues its invoice in the request's
transaction; a rolled-back order leaves no job; the progress streams to the end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest

from tests.helpers import ROOT, ErrandsProcess, wait_for
from tests.ui.conftest import free_port

EXAMPLE = ROOT / "examples" / "fastapi"


@pytest.fixture
def app_url(database_url: str) -> Iterator[str]:
    """The example app under uvicorn, as its docstring says to run it."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "app:app", "--port", str(port)],
        cwd=EXAMPLE,
        env={**os.environ, "DATABASE_URL": database_url},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        assert process.poll() is None, "uvicorn exited"
        try:
            return httpx.get(f"{url}/docs", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(answers, 30, what="the example app")
        yield url
    finally:
        process.terminate()
        process.wait(20)


def start_worker(database_url: str) -> ErrandsProcess:
    """``errands worker invoices:registry``, from the example's folder."""
    return ErrandsProcess(
        "worker",
        "invoices:registry",
        "--database-url",
        database_url,
        "--poll-interval",
        "0.2",
        env={"PYTHONPATH": f"{ROOT}{os.pathsep}{EXAMPLE}"},
    )


def events(url: str) -> list[dict[str, Any]]:
    """Every server-sent event of a stream, to its end."""
    seen = []
    with httpx.stream("GET", url, timeout=60) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                seen.append(json.loads(line.removeprefix("data: ")))
    return seen


def test_an_order_enqueues_its_invoice_and_streams_its_progress(
    app_url: str, database_url: str
) -> None:
    placed = httpx.post(
        f"{app_url}/orders", json={"item": "teapot", "quantity": 2, "step_seconds": 0.4}
    )
    assert placed.status_code == 201, placed.text
    job_url = f"{app_url}/orders/jobs/{placed.json()['job']}"
    time.sleep(1)
    assert httpx.get(job_url).json()["state"] == "queued"  # the app runs no worker itself

    worker = start_worker(database_url)
    try:
        stream = events(f"{job_url}/events")
    finally:
        worker.close()
    assert stream[-1]["state"] == "completed", stream
    assert stream[-1]["result"] == {"order": placed.json()["order"], "total": 24}
    progress = [event["progress"] for event in stream]
    assert progress == sorted(progress), progress
    assert len({p for p in progress if 0 < p < 1}) >= 2, progress  # seen while it ran


def test_an_order_that_rolls_back_leaves_no_job(app_url: str, database_url: str) -> None:
    refused = httpx.post(f"{app_url}/orders", json={"item": "kettle", "quantity": 5})
    assert refused.status_code == 409, refused.text
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM background_jobs").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM orders").fetchone() == (0,)
        stock = conn.execute("SELECT available FROM stock WHERE item = 'kettle'").fetchone()
        assert stock == (3,)
    assert (
        httpx.get(f"{app_url}/orders/jobs/{'0' * 8}-0000-7000-8000-{'0' * 12}").status_code == 404
    )
