"""``errands submit / jobs / cancel / sync`` as real subprocesses, against a real
sync service and worker."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from tests.client.processes import SyncServer, token
from tests.helpers import ErrandsProcess, wait_for


@pytest.fixture
def env(tmp_path: Path, server: SyncServer) -> dict[str, str]:
    return {
        "ERRANDS_SERVER": server.url,
        "ERRANDS_REPLICA": str(tmp_path / "cli.db"),
        "ERRANDS_TOKEN": token("carol"),
        "COLUMNS": "200",
    }


def run(env: dict[str, str], *args: str, timeout: float = 90) -> tuple[int, str]:
    """Run ``errands ARGS`` to its end; its exit status and output."""
    process = ErrandsProcess(*args, env=env)
    try:
        code = process.process.wait(timeout)
        return code, process.output()
    finally:
        process.close()


def states(database_url: str) -> list[tuple[str, str, bool]]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            "SELECT kind, state, cancelled FROM background_jobs ORDER BY timestamp"
        ).fetchall()


def test_bad_json_payload_is_a_usage_error_and_submits_nothing(
    env: dict[str, str], tmp_path: Path
) -> None:
    code, output = run(env, "submit", "add", "--payload", "{not json")
    assert code == 2
    assert "not valid JSON" in output
    assert "Traceback" not in output
    assert not (tmp_path / "cli.db").exists()


def test_submit_wait_prints_the_result(
    env: dict[str, str], server: SyncServer, worker: ErrandsProcess
) -> None:
    server.start()
    code, output = run(env, "submit", "add", "--payload", '{"a": 40, "b": 2}', "--wait")
    assert code == 0, output
    assert output.strip().splitlines()[-1] == "42"
    assert states(server.database_url) == [("add", "completed", False)]


def test_submit_wait_fails_when_the_job_fails(
    env: dict[str, str], server: SyncServer, worker: ErrandsProcess
) -> None:
    server.start()
    code, output = run(env, "submit", "flaky", "--payload", '{"succeed_on": 99}', "--wait")
    assert code == 1, output
    assert "failed" in output
    assert "Traceback" not in output


def test_offline_submit_then_sync_then_jobs_and_cancel(
    env: dict[str, str], server: SyncServer
) -> None:
    code, output = run(env, "submit", "sleep_async", "--payload", '{"steps": 5}')
    assert code == 0, output
    assert "offline" in output
    job_id = output.split("submitted ")[1].split()[0]

    code, output = run(env, "jobs")
    assert code == 0
    assert job_id[-8:] in output  # the short id, as the page shows it
    assert "not uploaded" in output

    server.start()
    code, output = run(env, "sync")
    assert code == 0, output
    assert "0 pending" in output
    assert states(server.database_url) == [("sleep_async", "queued", False)]

    code, output = run(env, "cancel", job_id[-8:])  # no worker runs: it is still queued
    assert code == 0, output
    assert f"cancellation requested for {job_id}" in output
    assert states(server.database_url) == [("sleep_async", "cancelled", True)]
    code, output = run(env, "jobs", "--limit", "5")
    assert job_id[-8:] in output
    assert "cancelled" in output
    assert "not uploaded" not in output

    code, output = run(env, "cancel", "01234567-89ab-7def-8123-456789abcdef")
    assert code == 1
    assert "no job's id ends with" in output


def test_submit_wait_ends_non_zero_when_cancelled_elsewhere(
    env: dict[str, str], server: SyncServer, worker: ErrandsProcess
) -> None:
    server.start()
    waiting = ErrandsProcess(
        "submit", "sleep_async", "--payload", '{"steps": 600, "step": 0.05}', "--wait", env=env
    )
    try:
        waiting.wait_for_output("submitted ", timeout=30)
        job_id = waiting.output().split("submitted ")[1].split()[0]
        wait_for(lambda: states(server.database_url) == [("sleep_async", "running", False)], 60)
        with psycopg.connect(server.database_url, autocommit=True) as conn:
            conn.execute("UPDATE background_jobs SET cancelled = true WHERE id = %s", (job_id,))
        assert waiting.process.wait(60) == 1
        assert "cancelled" in waiting.output()
    finally:
        waiting.close()


def test_a_refused_token_is_a_clear_error(env: dict[str, str], server: SyncServer) -> None:
    server.start()
    code, output = run({**env, "ERRANDS_TOKEN": "not-a-token"}, "sync")
    assert code == 1
    assert "refused the token" in output
    assert "Traceback" not in output


def test_a_corrupt_replica_is_a_clear_error_and_stays_untouched(
    env: dict[str, str], tmp_path: Path
) -> None:
    replica = tmp_path / "cli.db"
    replica.write_bytes(b"not sqlite at all" * 500)
    code, output = run(env, "jobs")
    assert code == 1
    assert "not a usable errands replica" in output
    assert "Traceback" not in output
    assert replica.read_bytes() == b"not sqlite at all" * 500


def test_jobs_on_an_empty_replica_says_so(env: dict[str, str]) -> None:
    code, output = run(env, "jobs")
    assert code == 0, output
    assert "no jobs yet" in output


def test_submit_says_why_the_server_refused_a_job(
    env: dict[str, str], database_url: str, tmp_path: Path
) -> None:
    """A kind clients may not submit, a payload its kind's schema refuses: the
    refusal's code and message, exit 1 (before: "submitted", exit 0)."""
    worker = ErrandsProcess(
        "worker", "tests.worker.test_tenancy:registry", "--database-url", database_url
    )
    server = SyncServer(database_url, "--client-kinds", "")
    try:
        worker.wait_for_output("started")  # it has registered its kinds
        server.start()
        env = env | {"ERRANDS_SERVER": server.url}
        code, output = run(env, "submit", "resize", "--payload", '{"width": "wide"}')
        assert code == 1, output
        assert "validation_error" in output
        assert "payload.width" in output
        code, output = run(env, "submit", "cleanup")
        assert code == 1, output
        assert "kind_not_allowed" in output
        assert "Traceback" not in output
        code, output = run(env, "submit", "resize", "--payload", '{"width": 2}', "--wait")
        assert code == 0, output
    finally:
        server.stop()
        worker.close()
