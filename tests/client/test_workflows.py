"""A workflow made by a client (``Client.submit(..., after=[...])``) on real processes:
made offline, uploaded whole, run in order by an ``errands worker`` subprocess, the last
job reading what the others returned; and the CLI listing showing who waits."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

import errands
from errands.protocol import MAX_DEPENDENCIES
from tests.client.processes import SyncServer, token
from tests.helpers import ErrandsProcess

REGISTRY = "tests.worker.workflow_handlers:registry"


def client_for(path: Path, url: str, user_token: str) -> errands.Client:
    return errands.Client(replica=path, server=url, token=user_token, max_backoff=0.3)


def workflow_worker(database_url: str) -> ErrandsProcess:
    """``errands worker`` of the workflow handlers (tests/worker/workflow_handlers.py)."""
    return ErrandsProcess(
        "worker", REGISTRY, "--database-url", database_url, "--poll-interval", "0.1"
    )


def test_a_three_job_workflow_made_offline_runs_in_order(
    tmp_path: Path, server: SyncServer, alice: str
) -> None:
    log = tmp_path / "log"
    with client_for(tmp_path / "r.db", server.url, alice) as client:
        client.connect()  # the server is down: everything stays local
        fetch = client.submit("record", {"name": "fetch", "log": str(log)})
        parse = client.submit("record", {"name": "parse", "log": str(log)}, after=[fetch])
        report = client.submit(
            "record", {"name": "report", "log": str(log)}, after=[fetch, parse.id]
        )
        assert [j.waiting_for for j in (fetch, parse, report)] == [0, 1, 2]
        assert report.state == "queued"
        assert report.pending
        assert client.status.pending == 3
        assert not client.status.connected

        server.start()
        worker = workflow_worker(server.database_url)
        try:
            done = client.wait(report.id, timeout=60)
        finally:
            worker.close()
        assert (done.state, done.waiting_for, done.pending) == ("completed", 0, False)
        assert log.read_text().splitlines() == ["fetch", "parse", "report"]
        fetched = {"name": "fetch", "saw": []}
        parsed = {"name": "parse", "saw": [fetched]}
        assert done.result == {"name": "report", "saw": [fetched, parsed]}  # in order named
    with psycopg.connect(server.database_url) as conn:
        edges = conn.execute("SELECT count(*) FROM job_dependencies").fetchone()
        owners = conn.execute("SELECT DISTINCT owner FROM background_jobs").fetchall()
    assert edges == (3,)
    assert owners == [("alice",)]


def test_a_synced_dependency_that_ended_is_not_waited_for_locally(
    tmp_path: Path, server: SyncServer, alice: str
) -> None:
    server.start()
    with client_for(tmp_path / "r.db", server.url, alice) as client:
        first = client.submit("record", {"name": "first"})
        client.sync()
        with psycopg.connect(server.database_url) as conn:
            conn.execute(
                "UPDATE background_jobs SET state = 'completed' WHERE id = %s", (first.id,)
            )
        client.sync()
        server.stop()  # offline again
        after = client.submit("record", {"name": "second"}, after=[first])
        assert after.waiting_for == 0  # it knows `first` completed


def test_bad_dependencies_are_refused_before_anything_is_saved(tmp_path: Path) -> None:
    with errands.Client(replica=tmp_path / "r.db", server="http://127.0.0.1:9") as client:
        job = client.submit("k")
        for bad in (["nope"], [job] * (MAX_DEPENDENCIES + 1), job.id):
            with pytest.raises(ValueError, match="after"):
                client.submit("k", after=bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="on_failure"):
            client.submit("k", after=[job], on_failure="maybe")  # type: ignore[typeddict-item]
        assert client.status.pending == 1


def test_a_refused_dependency_rejects_the_job_with_the_reason(
    tmp_path: Path, server: SyncServer, alice: str
) -> None:
    server.start()
    with client_for(tmp_path / "bob.db", server.url, token("bob")) as bob:
        bobs = bob.submit("record", {"name": "bob's"})
        bob.sync()
    with client_for(tmp_path / "alice.db", server.url, alice) as client:
        job = client.submit("record", {"name": "mine"}, after=[bobs.id])
        assert job.waiting_for == 1
        client.sync()
        refused = client.get(job.id)
        assert refused is not None
        assert refused.state == "rejected"
        assert refused.waiting_for == 0
        assert refused.rejected is not None
        assert refused.rejected.startswith(
            f"unknown_dependency: no job of yours has the id {bobs.id}"
        )


def errands_cli(replica: Path, url: str, user_token: str, *args: str) -> tuple[int, str]:
    """``errands ARGS`` as a subprocess, to its end: its exit status and output."""
    env = {"ERRANDS_SERVER": url, "ERRANDS_REPLICA": str(replica), "ERRANDS_TOKEN": user_token}
    process = ErrandsProcess(*args, env=env | {"COLUMNS": "200"})
    try:
        return process.process.wait(90), process.output()
    finally:
        process.close()


def test_errands_submit_after_and_errands_jobs_says_what_waits(
    tmp_path: Path, server: SyncServer, alice: str
) -> None:
    server.start()
    replica = tmp_path / "r.db"
    with client_for(replica, server.url, alice) as client:
        first = client.submit("record", {"name": "first"})
        second = client.submit("record", {"name": "second"}, after=[first])
    code, output = errands_cli(
        replica,
        server.url,
        alice,
        "submit",
        "record",
        "--after",
        first.id[-8:],
        "--after",
        second.id,
        "--payload",
        '{"name": "third"}',
    )
    assert code == 0, output
    code, output = errands_cli(replica, server.url, alice, "jobs")
    assert code == 0, output
    assert "waiting for 2 jobs" in output
    assert "waiting for 1 job" in output
    code, output = errands_cli(replica, server.url, alice, "submit", "record", "--after", "zzz")
    assert code == 2, output
    assert "no job's id ends with 'zzz'" in output
