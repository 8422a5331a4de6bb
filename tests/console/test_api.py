"""The console's HTTP side on a real ``errands server``: who may use it, what bad input
gets, the files it serves, and ``errands token --console-url``."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest

import errands
from errands.operations import JobEvent
from errands.sync.auth import make_token, verify_token
from errands.sync.console import attempts_of, sign_in_link
from tests.client.processes import SECRET, SyncServer
from tests.console.conftest import errands_token
from tests.helpers import ErrandsProcess
from tests.operations.jobs import end, start

# A fixed id: pytest-xdist needs the same parameters in every worker.
SOME_JOB = uuid.UUID("6f1d3c52-2b8e-4a57-9a43-0c3e8f1b2d10")
ADMIN_ROUTES = [
    ("GET", "/v1/admin/workers", None),
    ("GET", "/v1/admin/charts", None),
    ("GET", f"/v1/admin/jobs/{SOME_JOB}", None),
    ("POST", "/v1/admin/jobs/retry", {"ids": [str(SOME_JOB)]}),
    ("POST", "/v1/admin/jobs/cancel", {"ids": [str(SOME_JOB)]}),
    ("POST", "/v1/admin/jobs/delete", {"where": {}}),
    ("POST", "/v1/admin/jobs/delete", {"where": {}, "all": True}),
    ("GET", "/v1/admin/jobs", None),
    ("GET", "/v1/admin/counts", None),
    ("GET", "/v1/admin/me", None),
    ("GET", "/v1/admin/queues", None),
    ("GET", "/v1/admin/schedules", None),
    ("POST", "/v1/admin/queues/default/pause", None),
]


@pytest.fixture(scope="module")
def user_token() -> str:
    """A token of a user who is not an operator."""
    return make_token(SECRET, "alice")


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_ROUTES)
def test_only_operators_may_use_the_admin_routes(
    service: SyncServer,
    db: psycopg.Connection[Any],
    user_token: str,
    method: str,
    path: str,
    body: Any,
) -> None:
    job = errands.enqueue(db, "nobody-runs-this", {})
    for headers, status, code in [
        ({}, 401, "unauthorized"),
        ({"Authorization": "Bearer not-a-token"}, 401, "unauthorized"),
        ({"Authorization": f"Bearer {user_token}"}, 403, "operator_required"),
    ]:
        answer = httpx.request(method, service.url + path, json=body, headers=headers)
        assert answer.status_code == status, answer.text
        assert answer.json()["error"]["code"] == code
    # Nothing was done on the refused requests (the delete would have taken every job).
    assert db.execute("SELECT state FROM background_jobs WHERE id = %s", (job,)).fetchone() == (
        "queued",
    )


@pytest.mark.parametrize(
    ("method", "path", "body", "message"),
    [
        ("GET", "/v1/admin/jobs/not-a-uuid", None, "valid UUID"),
        ("POST", "/v1/admin/jobs/explode", {"ids": []}, "'delete' or 'reschedule'"),
        ("POST", "/v1/admin/jobs/delete", {}, "say which jobs"),
        ("POST", "/v1/admin/jobs/delete", {"where": {"states": ["lost"]}}, "states"),
        ("POST", "/v1/admin/jobs/retry", {"where": {"since": "2026-01-01T00:00:00"}}, "timezone"),
        ("POST", "/v1/admin/jobs/retry", {"where": {"kind": ["x"]}}, "kind"),
        ("POST", "/v1/admin/jobs/retry", {"ids": ["nope"]}, "UUID"),
        ("POST", "/v1/admin/jobs/retry", {"where": {"kinds": ["a\u0000"]}}, "NUL"),
        ("POST", "/v1/admin/jobs/retry", {"where": {"owners": ["\ud800"]}}, "owners.0"),
        ("GET", "/v1/admin/charts?minutes=0", None, "minutes"),
        ("GET", "/v1/admin/charts?minutes=100000", None, "minutes"),
    ],
)
def test_bad_input_is_a_clear_400(
    operator: httpx.Client, method: str, path: str, body: Any, message: str
) -> None:
    # json.dumps escapes a lone surrogate as \ud800 (httpx would fail to encode it).
    content = None if body is None else json.dumps(body)
    headers = {"Content-Type": "application/json"}
    answer = operator.request(method, path, content=content, headers=headers)
    assert answer.status_code == 400, answer.text
    assert message in answer.json()["error"]["message"]


def test_an_unknown_job_is_404(operator: httpx.Client) -> None:
    answer = operator.get(f"/v1/admin/jobs/{uuid.uuid4()}")
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "not_found"


def test_a_job_with_its_timeline_and_attempts(
    operator: httpx.Client, db: psycopg.Connection[Any]
) -> None:
    job = errands.enqueue(db, "resize", {"w": 10}, queue="q-api", owner="bob")
    # One transaction: the running worker never sees the made-up one's job as orphaned.
    with db.transaction():
        start(db, job)
        end(db, job, "failed")
        db.execute("UPDATE background_jobs SET state = 'queued' WHERE id = %s", (job,))
        start(db, job)
        end(db, job, "completed")

    detail = operator.get(f"/v1/admin/jobs/{job}").json()

    assert detail["job"]["id"] == str(job)
    assert (detail["job"]["owner"], detail["job"]["queue"]) == ("bob", "q-api")
    assert detail["job"]["payload"] == {"w": 10}
    assert [e["type"] for e in detail["events"]] == [
        "queued",
        "started",
        "failed",
        "retried",
        "started",
        "completed",
    ]
    attempts = detail["attempts"]
    assert [(a["attempt"], a["outcome"]) for a in attempts] == [(1, "failed"), (2, "completed")]
    assert attempts[0]["error"] == {"type": "ValueError", "message": "boom"}
    assert attempts[1]["error"] is None
    assert all(a["worker"] == "test-host:1:abcd" for a in attempts)
    assert all(a["seconds"] is not None and a["seconds"] >= 0 for a in attempts)


def test_actions_by_id_and_filter_say_what_they_changed(
    operator: httpx.Client, db: psycopg.Connection[Any]
) -> None:
    queue = f"q-{uuid.uuid4().hex[:8]}"
    queued = [errands.enqueue(db, "nobody-runs-this", {}, queue=queue) for _ in range(3)]
    elsewhere = errands.enqueue(db, "nobody-runs-this", {}, queue="q-other")

    cancelled = operator.post(
        "/v1/admin/jobs/cancel", json={"where": {"queues": [queue], "states": ["queued"]}}
    ).json()
    again = operator.post("/v1/admin/jobs/cancel", json={"ids": [str(queued[0])]}).json()
    retried = operator.post("/v1/admin/jobs/retry", json={"ids": [str(queued[1])]}).json()
    deleted = operator.post(
        "/v1/admin/jobs/delete", json={"ids": [str(queued[2])], "where": {"queues": [queue]}}
    ).json()

    assert cancelled == {"action": "cancel", "ids": sorted(str(j) for j in queued), "held": {}}
    assert again == {"action": "cancel", "ids": [], "held": {}}  # already cancelled: left alone
    assert retried == {"action": "retry", "ids": [str(queued[1])], "held": {}}
    assert deleted == {"action": "delete", "ids": [str(queued[2])], "held": {}}
    rows = dict(
        db.execute(
            "SELECT id, state FROM background_jobs WHERE queue IN (%s, 'q-other')", (queue,)
        ).fetchall()
    )
    assert rows == {queued[0]: "cancelled", queued[1]: "queued", elsewhere: "queued"}


def test_the_page_and_its_files(service: SyncServer) -> None:
    page = httpx.get(f"{service.url}/console")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["referrer-policy"] == "no-referrer"
    assert '<script type="module" src="console/console.js">' in page.text
    script = httpx.get(f"{service.url}/console/console.js")
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    assert httpx.get(f"{service.url}/console/console.css").status_code == 200
    for missing in ["nothing.js", "..%2Fapp.py", "console.html.bak", "%2Fetc%2Fpasswd"]:
        answer = httpx.get(f"{service.url}/console/{missing}")
        assert answer.status_code == 404, missing
        assert answer.json()["error"]["code"] == "not_found"


def test_the_admin_routes_are_in_the_openapi_document(service: SyncServer) -> None:
    paths = httpx.get(f"{service.url}/openapi.json").json()["paths"]
    assert {"/v1/admin/workers", "/v1/admin/charts", "/v1/admin/jobs/{job_id}"} <= set(paths)
    assert "/console" not in paths


def test_token_prints_a_sign_in_link_with_the_token_in_the_fragment() -> None:
    link = errands_token("--user", "ops", "--operator", "--console-url", "https://ops.example/")
    address, _, fragment = link.partition("#")
    assert address == "https://ops.example/console"
    assert fragment.startswith("token=")
    assert verify_token(SECRET, fragment.removeprefix("token=")).operator


def test_token_reads_the_console_url_from_the_environment() -> None:
    process = ErrandsProcess(
        "token",
        "--user",
        "ops",
        "--operator",
        env={"ERRANDS_SECRET": SECRET, "ERRANDS_CONSOLE_URL": "http://127.0.0.1:9/errands"},
    )
    try:
        assert process.process.wait(30) == 0
        assert process.output().strip().startswith("http://127.0.0.1:9/errands/console#token=")
    finally:
        process.close()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--console-url", "http://127.0.0.1:8000"], "add --operator"),
        (["--operator", "--console-url", "127.0.0.1:8000"], "not an http(s) URL"),
        (["--operator", "--console-url", "javascript:alert(1)"], "not an http(s) URL"),
    ],
)
def test_token_refuses_a_console_link_it_cannot_make(args: list[str], message: str) -> None:
    process = ErrandsProcess("token", "--user", "ops", *args, env={"ERRANDS_SECRET": SECRET})
    try:
        assert process.process.wait(30) == 2
        assert message in process.output()
        assert "Traceback" not in process.output()
    finally:
        process.close()


def test_sign_in_link_keeps_a_path_and_does_not_repeat_console() -> None:
    assert sign_in_link("http://h:1/console/", "T") == "http://h:1/console#token=T"
    assert sign_in_link("http://h:1/a/b", "T") == "http://h:1/a/b/console#token=T"
    with pytest.raises(ValueError, match="http"):
        sign_in_link("file:///etc", "T")


def test_an_attempt_without_an_end_is_running() -> None:
    job, at = uuid.uuid4(), datetime(2026, 1, 1, tzinfo=UTC)
    events = [
        JobEvent(1, job, at, "queued", 0, None, None),
        JobEvent(2, job, at + timedelta(seconds=2), "started", 1, "w", None),
    ]
    (attempt,) = attempts_of(events)
    assert (attempt.attempt, attempt.worker, attempt.outcome) == (1, "w", "running")
    assert (attempt.started_at, attempt.ended_at, attempt.seconds) == (events[1].at, None, None)
    assert attempts_of(events[:1]) == []
