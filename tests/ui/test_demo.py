"""``errands demo`` as a user runs it: it prints the pages' URLs and the tokens that open
them, the pages answer and a job runs, and Ctrl-C (SIGINT) stops every process it
started; the data (and the secret) survive."""

from __future__ import annotations

import re
import shutil
import signal
import stat
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psutil
import pytest

from errands.demo.secret import demo_secret
from tests.helpers import ErrandsProcess, wait_for


@dataclass(frozen=True)
class Printed:
    """What the demo printed: the addresses and the tokens."""

    page: str
    hosted: str
    user_token: str
    console_link: str

    @property
    def operator_token(self) -> str:
        """The token in the console link's fragment."""
        fragment = urlsplit(self.console_link).fragment
        assert fragment.startswith("token="), self.console_link
        return fragment.removeprefix("token=")


def start_demo(*args: str, python: str = sys.executable) -> tuple[ErrandsProcess, Printed]:
    """``errands demo --port 0 ARGS`` (run by ``python``), once it has printed the pages'
    URLs."""
    demo = ErrandsProcess("demo", "--port", "0", *args, python=python)
    demo.wait_for_output("Press Ctrl-C to stop", timeout=90)
    output = demo.output()

    def printed(pattern: str) -> str:
        match = re.search(pattern, output)
        assert match, output
        return match.group(1)

    return demo, Printed(
        page=printed(r"Background Jobs page:\s+(http://127\.0\.0\.1:\d+/)\s+\(errands ui\)"),
        hosted=printed(r"Hosted page:\s+(http://127\.0\.0\.1:\d+/)\s+\(errands server\)"),
        user_token=printed(r"its token \(local\):\s+(\S+)\n"),
        console_link=printed(r"Operator console:\s+(http://127\.0\.0\.1:\d+/console#token=\S+)"),
    )


def check_signing_in(printed: Printed) -> None:
    """The hosted page and the console answer, and the printed tokens are what they say:
    the user's for the page's user, the link's for an operator."""
    hosted = httpx.get(printed.hosted)
    assert hosted.status_code == 200, hosted.text
    assert "<script" in hosted.text
    client = httpx.get(f"{printed.hosted}v1/client/errands.js")  # before signing in
    assert client.status_code == 200, client.text
    console = httpx.get(printed.console_link.split("#", 1)[0])
    assert console.status_code == 200, console.text

    def me(token: str) -> Any:
        answer = httpx.get(f"{printed.hosted}v1/me", headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 200, answer.text
        return answer.json()

    assert httpx.get(f"{printed.hosted}v1/me").status_code == 401  # not --insecure
    assert me(printed.operator_token)["operator"] is True
    user = me(printed.user_token)
    assert (user["user"], user["operator"]) == ("local", False)


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
    for command in ("server --database-url", "worker errands.demo.handlers:registry", "ui --port"):
        assert command in names
    assert "--insecure" not in names
    for secret_option in ("--secret", "--token", "ERRANDS_"):  # in the environment
        assert secret_option not in names
    assert demo.stop(signal.SIGINT, timeout=60) == 0, demo.output()
    _, alive = psutil.wait_procs(children, timeout=10)
    assert alive == [], f"left running: {alive}"
    assert "stopped; the data stays for the next run" in demo.output()


def test_demo_on_a_given_database(database_url: str, tmp_path: Path) -> None:
    demo, printed = start_demo("--database-url", database_url, "--data-dir", str(tmp_path))
    url = printed.page
    try:
        check_signing_in(printed)
        hosted_kinds = httpx.get(f"{printed.hosted}kinds.json").json()["kinds"]
        assert [kind["name"] for kind in hosted_kinds] == ["random_progress", "primes", "fails"]
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
    demo, printed = start_demo("--data-dir", str(data_dir))
    secret = data_dir / "secret"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    try:
        check_signing_in(printed)
        job = run_primes(printed.page)
        stop_with_ctrl_c(demo)
    finally:
        demo.close()
    assert not (data_dir / "postgres" / "postmaster.pid").exists(), "Postgres still runs"
    for replica in data_dir.glob("replica.db*"):  # what comes back must come from Postgres
        replica.unlink()

    kept = secret.read_text()
    again, printed = start_demo("--data-dir", str(data_dir))
    url = printed.page
    assert secret.read_text() == kept
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


def test_the_demo_secret_is_made_once_and_kept_private(tmp_path: Path) -> None:
    first = demo_secret(tmp_path)
    path = tmp_path / "secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first) == 64
    assert demo_secret(tmp_path) == first
    path.chmod(0o644)  # a copy restored loosely is made private again, and kept
    assert demo_secret(tmp_path) == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.write_text("\n")  # an emptied one is replaced
    replaced = demo_secret(tmp_path)
    assert len(replaced) == 64
    assert replaced != first
    assert path.read_text() == replaced + "\n"
