"""``errands migrate`` and ``errands worker`` as a user runs them."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

import errands
from tests.helpers import ROOT, ErrandsProcess
from tests.worker.conftest import FAST, job, wait_for_state


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os  # noqa: PLC0415

    return subprocess.run(
        [sys.executable, "-m", "errands", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        timeout=60,
        check=False,
    )


def test_migrate_twice_says_up_to_date(empty_database_url: str) -> None:
    first = run("migrate", "--database-url", empty_database_url)
    assert first.returncode == 0, first.stderr
    assert "applied migration 0001" in first.stderr
    second = run("migrate", env={"ERRANDS_DATABASE_URL": empty_database_url})
    assert second.returncode == 0
    assert "up to date" in second.stderr


def test_migrate_an_unreachable_database_fails_clearly() -> None:
    result = run("migrate", "--database-url", "postgresql://nobody@127.0.0.1:1/none")
    assert result.returncode == 1
    assert "error: could not migrate the database" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_such_module:registry", "cannot import 'no_such_module'"),
        ("tests.worker.handlers:nothing", "should name an errands.Registry, but it is nothing"),
        ("tests.worker.handlers:add", "should name an errands.Registry, but it is function"),
    ],
)
def test_a_bad_registry_argument_is_a_clear_error(spec: str, message: str) -> None:
    result = run("worker", spec, "--database-url", "postgresql://unused@127.0.0.1:1/x")
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_worker_without_a_database_says_how_to_give_one() -> None:
    result = run("worker", "tests.worker.handlers:registry")
    assert result.returncode == 2
    assert "--database-url" in result.stderr
    assert "ERRANDS_DATABASE_URL" in result.stderr


def test_worker_help_names_every_environment_variable() -> None:
    result = run("worker", "--help")
    assert result.returncode == 0
    for variable in ("ERRANDS_DATABASE_URL", "ERRANDS_CONCURRENCY", "ERRANDS_QUEUES"):
        assert variable in result.stdout


def test_the_worker_takes_its_options_from_the_environment(
    conn: psycopg.Connection[Any], database_url: str
) -> None:
    worker = ErrandsProcess(
        "worker", *FAST, env={"ERRANDS_DATABASE_URL": database_url,
                              "ERRANDS_REGISTRY": "tests.worker.handlers:registry",
                              "ERRANDS_CONCURRENCY": "3"}
    )  # fmt: skip
    try:
        worker.wait_for_output("concurrency 3")
        job_id = errands.enqueue(conn, "add", {"a": 20, "b": 22})
        assert wait_for_state(conn, job_id, "completed")["result"] == 42
    finally:
        worker.close()


def test_worker_on_an_unmigrated_database_says_to_migrate(empty_database_url: str) -> None:
    result = run("worker", "tests.worker.handlers:registry", "--database-url", empty_database_url)
    assert result.returncode == 1
    assert "lacks errands migrations (0001_jobs" in result.stderr
    assert "errands migrate" in result.stderr
    assert "Traceback" not in result.stderr


def test_worker_on_an_unreachable_database_fails_at_once() -> None:
    url = "postgresql://nobody@127.0.0.1:1/none?connect_timeout=2"
    result = run("worker", "tests.worker.handlers:registry", "--database-url", url)
    assert result.returncode == 1
    assert "error: cannot reach the database" in result.stderr
    assert "Traceback" not in result.stderr


def test_burst_runs_what_is_runnable_then_exits(
    conn: psycopg.Connection[Any], database_url: str
) -> None:
    runnable = errands.enqueue_many(conn, "add", [{"a": i, "b": i} for i in range(5)])
    later = errands.enqueue(
        conn, "add", {"a": 0, "b": 0}, run_at=datetime.now(UTC) + timedelta(hours=1)
    )
    unknown = errands.enqueue(conn, "nobody_handles_this", {})
    worker = ("worker", "tests.worker.handlers:registry", "--database-url", database_url, *FAST)
    result = run(*worker, "--burst", "--concurrency", "2")
    assert result.returncode == 0, result.stderr
    assert "no runnable job left" in result.stderr
    for i, job_id in enumerate(runnable):
        assert (job(conn, job_id)["state"], job(conn, job_id)["result"]) == ("completed", 2 * i)
    assert job(conn, later)["state"] == "queued"
    assert job(conn, unknown)["state"] == "queued"
    assert conn.execute("SELECT count(*) FROM errands_workers").fetchone() == (0,)
    # Nothing runnable at all: it exits straight away (the flag also reads ERRANDS_BURST).
    again = run(*worker, env={"ERRANDS_BURST": "1"})
    assert again.returncode == 0, again.stderr
    assert "no runnable job left" in again.stderr


@pytest.mark.parametrize(
    ("value", "message"),
    [("none", "'none' is neither a number nor 'auto'"), ("0", "at least 1 process")],
)
def test_processes_takes_a_number_or_auto(value: str, message: str) -> None:
    result = run("worker", "tests.worker.handlers:registry", "--processes", value,
                 "--database-url", "postgresql://unused@127.0.0.1:1/x")  # fmt: skip
    assert result.returncode == 2
    assert message in result.stderr
