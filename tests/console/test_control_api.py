"""The console's API in control (issue 16), on a real ``errands server``: a page of jobs
at a time with counts from SQL, search, bulk retry that holds back jobs whose unique key
is taken, no action on every job without ``"all": true``, the operator named in every
event, queues paused and resumed, and a read-only operator who changes nothing."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest

import errands
from tests.client.processes import SECRET, SyncServer
from tests.console.conftest import errands_token, scratch_database, sync_server
from tests.helpers import ErrandsProcess
from tests.operations.jobs import end, start
from tests.sync.api import mutation

Conn = psycopg.Connection[Any]


@pytest.fixture(scope="module")
def own_database(server_url: str, template_db: str) -> Iterator[str]:
    """A database of this module's own: some tests act on every job in it."""
    yield from scratch_database(server_url, template_db)


@pytest.fixture(scope="module")
def own_service(own_database: str) -> Iterator[SyncServer]:
    """``errands server`` on it."""
    yield from sync_server(own_database)


def client(service: SyncServer, *token_args: str) -> httpx.Client:
    """An HTTP client of ``service`` with the token ``errands token ARGS`` prints."""
    signed = errands_token(*token_args)
    return httpx.Client(base_url=service.url, headers={"Authorization": f"Bearer {signed}"})


@pytest.fixture(scope="module")
def ops(own_service: SyncServer) -> Iterator[httpx.Client]:
    """The operator ``carol``."""
    with client(own_service, "--user", "carol", "--operator") as http:
        yield http


@pytest.fixture(scope="module")
def viewer(own_service: SyncServer) -> Iterator[httpx.Client]:
    """The read-only operator ``vera``."""
    with client(own_service, "--user", "vera", "--operator", "--read-only") as http:
        yield http


@pytest.fixture
def db(own_database: str) -> Iterator[Conn]:
    """A connection to the module's database, emptied before each test."""
    with psycopg.connect(own_database, autocommit=True) as conn:
        conn.execute("DELETE FROM background_jobs")
        conn.execute("DELETE FROM errands_queue_pauses")
        yield conn


def failed(db: Conn, key: str | None = None, payload: Any = None) -> uuid.UUID:
    job = errands.enqueue(db, "resize", payload or {}, owner="alice", unique_key=key)
    start(db, job)
    end(db, job, "failed")
    return job


def test_a_page_at_a_time_with_counts_and_search(ops: httpx.Client, db: Conn) -> None:
    made = [errands.enqueue(db, "resize", {"file": f"photo-{n}.jpg"}) for n in range(5)]
    broken = failed(db, payload={"file": "Broken-Scan.TIFF"})
    newest_first = [str(broken), *(str(j) for j in reversed(made))]

    first = ops.get("/v1/admin/jobs", params={"limit": 4}).json()
    assert [j["id"] for j in first["jobs"]] == newest_first[:4]
    assert first["newer"] is None
    rest = ops.get("/v1/admin/jobs", params={"limit": 4, "after": first["older"]}).json()
    assert [j["id"] for j in rest["jobs"]] == newest_first[4:]
    assert rest["older"] is None
    back = ops.get("/v1/admin/jobs", params={"limit": 4, "before": rest["newer"]}).json()
    assert [j["id"] for j in back["jobs"]] == newest_first[:4]

    found = ops.get("/v1/admin/jobs", params={"search": "broken-scan"}).json()
    assert [j["id"] for j in found["jobs"]] == [str(broken)]
    only_failed = ops.get("/v1/admin/jobs", params={"states": "failed"}).json()
    assert [j["id"] for j in only_failed["jobs"]] == [str(broken)]

    counts = ops.get("/v1/admin/counts", params={"states": "failed"}).json()
    assert counts["counts"] == {
        "queued": 5,
        "running": 0,
        "completed": 0,
        "failed": 1,
        "cancelled": 0,
    }
    assert (counts["total"], counts["estimated"]) == (6, [])
    assert counts["exact_up_to"] >= 10_000
    searched = ops.get("/v1/admin/counts", params={"search": "photo-3"}).json()
    assert searched["total"] == 1

    bad = ops.get("/v1/admin/jobs", params={"after": "forged"})
    assert bad.status_code == 400
    assert "not a cursor" in bad.json()["error"]["message"]


def test_bulk_retry_holds_back_taken_unique_keys(ops: httpx.Client, db: Conn) -> None:
    older, newer = failed(db, "nightly"), failed(db, "nightly")
    blocked = failed(db, "weekly")
    errands.enqueue(db, "resize", {}, owner="alice", unique_key="weekly")

    answer = ops.post("/v1/admin/jobs/retry", json={"where": {"states": ["failed"]}})

    assert answer.status_code == 200, answer.text
    assert answer.json()["ids"] == [str(newer)]
    assert answer.json()["held"] == {str(older): "nightly", str(blocked): "weekly"}


def test_acting_on_every_job_needs_all_true(ops: httpx.Client, db: Conn) -> None:
    jobs = [errands.enqueue(db, "resize", {}) for _ in range(3)]
    for body in ({"where": {}}, {"where": {"states": [], "kinds": []}}):
        refused = ops.post("/v1/admin/jobs/delete", json=body)
        assert refused.status_code == 400, refused.text
        assert '"all": true' in refused.json()["error"]["message"]
    assert db.execute("SELECT count(*) FROM background_jobs").fetchone() == (3,)

    done = ops.post("/v1/admin/jobs/cancel", json={"where": {}, "all": True})
    assert sorted(done.json()["ids"]) == sorted(str(j) for j in jobs)


def test_every_action_names_the_operator(ops: httpx.Client, db: Conn) -> None:
    job = failed(db)
    running = errands.enqueue(db, "resize", {})
    start(db, running)
    waiting = errands.enqueue(db, "resize", {})
    db.execute(
        "UPDATE background_jobs SET run_at = now() + interval '1 day' WHERE id = %s", (waiting,)
    )

    ops.post("/v1/admin/jobs/retry", json={"ids": [str(job)]}).raise_for_status()
    ops.post("/v1/admin/jobs/cancel", json={"ids": [str(running)]}).raise_for_status()
    ops.post("/v1/admin/jobs/reschedule", json={"ids": [str(waiting)]}).raise_for_status()

    for job_id, kind in [(job, "retried"), (running, "cancel_requested"), (waiting, "rescheduled")]:
        events = ops.get(f"/v1/admin/jobs/{job_id}").json()["events"]
        assert (events[-1]["type"], events[-1]["operator"], events[-1]["worker"]) == (
            kind,
            "carol",
            None,
        )
    row = db.execute("SELECT run_at <= now() FROM background_jobs WHERE id = %s", (waiting,))
    assert row.fetchone() == (True,)


def test_pause_and_resume_a_queue(ops: httpx.Client, db: Conn) -> None:
    errands.enqueue(db, "resize", {}, queue="mail")
    paused = ops.post("/v1/admin/queues/mail/pause").json()
    assert paused == {"queue": "mail", "paused": True, "changed": True}
    (mail,) = [q for q in ops.get("/v1/admin/queues").json()["queues"] if q["name"] == "mail"]
    assert (mail["ready"], mail["paused"], mail["paused_by"]) == (1, True, "carol")
    assert mail["oldest_waiting"] is not None
    resumed = ops.post("/v1/admin/queues/mail/resume").json()
    assert resumed == {"queue": "mail", "paused": False, "changed": True}
    assert ops.post("/v1/admin/queues/mail/resume").json()["changed"] is False


def test_a_read_only_operator_sees_everything_and_changes_nothing(
    viewer: httpx.Client, db: Conn
) -> None:
    job = failed(db)
    errands.enqueue(db, "resize", {}, queue="mail")
    assert viewer.get("/v1/admin/me").json() == {"user": "vera", "read_only": True}
    for path in ("/v1/admin/jobs", "/v1/admin/counts", "/v1/admin/queues", f"/v1/admin/jobs/{job}"):
        assert viewer.get(path).status_code == 200, path
    for path, body in [
        ("/v1/admin/jobs/retry", {"ids": [str(job)]}),
        ("/v1/admin/jobs/cancel", {"where": {}, "all": True}),
        ("/v1/admin/jobs/delete", {"ids": [str(job)]}),
        ("/v1/admin/jobs/reschedule", {"ids": [str(job)]}),
        ("/v1/admin/queues/mail/pause", None),
    ]:
        refused = viewer.post(path, json=body)
        assert refused.status_code == 403, path
        assert "read-only" in refused.json()["error"]["message"]
    # Nor through the sync protocol's writes.
    sync = viewer.post(
        "/v1/mutations", json={"mutations": [mutation("update", str(job), {"cancelled": True})]}
    )
    assert sync.json()["results"][0]["status"] == "rejected"
    assert db.execute("SELECT state FROM background_jobs WHERE id = %s", (job,)).fetchone() == (
        "failed",
    )
    assert db.execute("SELECT count(*) FROM errands_queue_pauses").fetchone() == (0,)


def test_read_only_needs_operator() -> None:
    process = ErrandsProcess("token", "--user", "x", "--read-only", env={"ERRANDS_SECRET": SECRET})
    try:
        assert process.process.wait(30) == 2
        assert "add --operator" in process.output()
    finally:
        process.close()
