"""``errands demo`` as a user runs it: it prints the page's URL, the page answers and a
job runs, and Ctrl-C (SIGINT) stops every process it started; the data survives."""

from __future__ import annotations

import re
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.helpers import ErrandsProcess, wait_for


def start_demo(*args: str) -> tuple[ErrandsProcess, str]:
    """``errands demo --port 0 ARGS``, once it has printed the page's URL."""
    demo = ErrandsProcess("demo", "--port", "0", *args)
    demo.wait_for_output("Press Ctrl-C to stop", timeout=90)
    match = re.search(r"Background Jobs page:\s+(http://127\.0\.0\.1:\d+/)", demo.output())
    assert match, demo.output()
    return demo, match.group(1)


def run_primes(url: str) -> dict[str, Any]:
    """Submit a primes job through the page's API; the job once it completed."""
    created = httpx.post(f"{url}api/jobs", json={"kind": "primes", "payload": {"n": 1000}})
    assert created.status_code == 201, created.text
    job_id = created.json()["id"]

    def completed() -> dict[str, Any] | None:
        jobs = httpx.get(f"{url}api/jobs").json()["jobs"]
        job = next(job for job in jobs if job["id"] == job_id)
        return job if job["state"] == "completed" else None

    return wait_for(completed, timeout=60, what="the demo's worker to run the job")


def stop_with_ctrl_c(demo: ErrandsProcess) -> None:
    """SIGINT, as Ctrl-C sends it; every child must be gone when the demo exits."""
    children = psutil.Process(demo.pid).children(recursive=True)
    names = " ".join(" ".join(child.cmdline()) for child in children)
    for command in ("server --insecure", "worker errands.demo.handlers:registry", "ui --port"):
        assert command in names
    assert demo.stop(signal.SIGINT, timeout=60) == 0, demo.output()
    _, alive = psutil.wait_procs(children, timeout=10)
    assert alive == [], f"left running: {alive}"
    assert "stopped; the data stays for the next run" in demo.output()


def test_demo_on_a_given_database(database_url: str, tmp_path: Path) -> None:
    demo, url = start_demo("--database-url", database_url, "--data-dir", str(tmp_path))
    try:
        page = httpx.get(url)
        assert page.status_code == 200
        assert "Submit new job" in page.text
        kinds = [kind["name"] for kind in httpx.get(f"{url}api/kinds").json()["kinds"]]
        assert kinds == ["random_progress", "primes", "fails"]
        assert run_primes(url)["result"] == {"n": 1000, "primes": 168, "largest": 997}
        stop_with_ctrl_c(demo)
        assert sorted(p.name for p in (tmp_path / "logs").iterdir()) == [
            "page.log",
            "sync-service.log",
            "worker.log",
        ]
    finally:
        demo.close()


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A data directory outside pytest's temporary tree: the embedded Postgres runs as
    another user when the tests run as root, and every pytest session starting on this
    machine takes the others' permissions away from that tree."""
    folder = Path(tempfile.mkdtemp(prefix="errands-demo-test-"))
    yield folder / "data"
    shutil.rmtree(folder, ignore_errors=True)


def test_demo_on_the_embedded_postgres_keeps_its_data(data_dir: Path) -> None:
    demo, url = start_demo("--data-dir", str(data_dir))
    try:
        job = run_primes(url)
        stop_with_ctrl_c(demo)
    finally:
        demo.close()
    assert not (data_dir / "postgres" / "postmaster.pid").exists(), "Postgres still runs"
    for replica in data_dir.glob("replica.db*"):  # what comes back must come from Postgres
        replica.unlink()

    again, url = start_demo("--data-dir", str(data_dir))
    try:
        synced = wait_for(
            lambda: httpx.get(f"{url}api/jobs").json()["jobs"], what="the job to sync back"
        )
        assert [(j["id"], j["state"], j["result"]) for j in synced] == [
            (job["id"], "completed", job["result"])
        ]
        stop_with_ctrl_c(again)
    finally:
        again.close()
    assert not (data_dir / "postgres" / "postmaster.pid").exists(), "Postgres still runs"


def test_demo_says_when_its_database_cannot_be_reached(tmp_path: Path, dead_server: str) -> None:
    port = dead_server.rsplit(":", 1)[1]
    demo = ErrandsProcess(
        "demo",
        "--port",
        "0",
        "--data-dir",
        str(tmp_path),
        "--database-url",
        f"postgresql://errands@127.0.0.1:{port}/errands",
    )
    try:
        assert demo.process.wait(60) == 1
        assert "error: cannot prepare the database" in demo.output()
        assert "Traceback" not in demo.output()
    finally:
        demo.close()
