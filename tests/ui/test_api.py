"""The page's JSON API and event stream, in process, on a real Client with no server
(everything the page does is local first). Bad input gets a 4xx with a clear message,
and nothing is submitted."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

import errands
from errands.protocol import MAX_JSON_DEPTH, MAX_PAYLOAD_BYTES, START, ShapeResponse, UpsertMessage
from errands.ui import Kind, create_app, parse_kind
from errands.ui.local import page_hosts


@pytest.fixture
def client(tmp_path: Path, dead_server: str) -> Iterator[errands.Client]:
    """A Client that stays offline."""
    with errands.Client(replica=tmp_path / "replica.db", server=dead_server) as offline:
        yield offline


@pytest.fixture
def api(client: errands.Client) -> Iterator[TestClient]:
    kinds = [Kind("primes", {"n": 10}), Kind("fails")]
    app = create_app(client, kinds, limit=5, online=False, hosts=page_hosts(8080))
    with TestClient(app, base_url="http://127.0.0.1:8080") as test_client:
        yield test_client


def assert_error(response: object, status: int, code: str, words: str) -> None:
    assert getattr(response, "status_code", None) == status
    error = response.json()["error"]  # type: ignore[attr-defined]
    assert error["code"] == code
    assert words in error["message"]


def test_submit_lists_and_cancels_locally(api: TestClient, client: errands.Client) -> None:
    created = api.post("/api/jobs", json={"kind": "primes", "payload": {"n": 50}})
    assert created.status_code == 201
    job = created.json()
    assert (job["kind"], job["payload"], job["state"], job["pending"]) == (
        "primes",
        {"n": 50},
        "queued",
        True,
    )
    assert job["id"].replace("-", "").endswith(job["short_id"])
    stored = client.get(job["id"])
    assert stored is not None
    assert stored.payload == {"n": 50}

    listed = api.get("/api/jobs").json()
    assert [row["id"] for row in listed["jobs"]] == [job["id"]]
    assert listed["status"] == {
        "enabled": False,
        "connected": False,
        "reason": "not connected",
        "pending": 1,
        "rejected": 0,
    }

    cancelled = api.post(f"/api/jobs/{job['id']}/cancel")
    assert cancelled.status_code == 200
    assert cancelled.json()["cancel_requested"] is True
    stored = client.get(job["id"])
    assert stored is not None
    assert stored.cancelled


def test_the_table_shows_the_newest_jobs_up_to_the_limit(
    api: TestClient, client: errands.Client
) -> None:
    ids = [client.submit("primes", {"n": i}).id for i in range(7)]
    shown = [row["id"] for row in api.get("/api/jobs").json()["jobs"]]
    assert shown == ids[::-1][:5]


@pytest.mark.parametrize(
    ("body", "status", "code", "words"),
    [
        ('{"kind": "primes", "payload": {"n": 1,}', 400, "invalid_json", "not valid JSON"),
        ('{"payload": {}}', 400, "validation_error", "kind"),
        ('{"kind": "primes", "extra": 1}', 400, "validation_error", "extra"),
        ('{"kind": "resize", "payload": {}}', 400, "validation_error", "unknown kind 'resize'"),
        ('["primes"]', 400, "validation_error", "body"),
        (
            json.dumps({"kind": "primes", "payload": "x" * MAX_PAYLOAD_BYTES}),
            413,
            "payload_too_large",
            "limit",
        ),
    ],
)
def test_bad_submissions_are_refused_and_submit_nothing(
    api: TestClient, client: errands.Client, body: str, status: int, code: str, words: str
) -> None:
    response = api.post("/api/jobs", content=body, headers={"Content-Type": "application/json"})
    assert_error(response, status, code, words)
    assert client.jobs() == []
    assert client.status.pending == 0


def test_cancel_refuses_unknown_malformed_and_ended_jobs(
    api: TestClient, client: errands.Client
) -> None:
    unknown = "01900000-0000-7000-8000-000000000000"
    assert_error(api.post(f"/api/jobs/{unknown}/cancel"), 404, "not_found", unknown)
    assert_error(api.post("/api/jobs/nope/cancel"), 400, "validation_error", "UUID")
    ended = "01900000-0000-7000-8000-000000000001"
    row = {"id": ended, "timestamp": "2026-01-01T00:00:00+00:00", "state": "completed"}
    client.replica.apply(
        ShapeResponse(messages=[UpsertMessage(key=ended, row=row)], offset="g_5_5_"), START
    )
    assert_error(api.post(f"/api/jobs/{ended}/cancel"), 409, "bad_request", "already ended")
    stored = client.get(ended)
    assert stored is not None
    assert not stored.cancelled


def test_unknown_routes_and_methods_answer_in_the_error_format(api: TestClient) -> None:
    assert_error(api.get("/api/nothing"), 404, "not_found", "Not Found")
    assert_error(api.delete("/api/jobs"), 405, "method_not_allowed", "Not Allowed")


def test_the_page_and_its_assets_are_served(api: TestClient) -> None:
    page = api.get("/")
    assert page.status_code == 200
    assert "Submit new job" in page.text
    for asset in ("/static/app.js", "/static/style.css", "/static/model.js", "/static/rules.js"):
        assert api.get(asset).status_code == 200
    kinds = api.get("/api/kinds").json()["kinds"]
    assert kinds == [{"name": "primes", "example": {"n": 10}}, {"name": "fails", "example": {}}]


def test_the_page_may_not_be_framed_and_loads_only_its_own_files(api: TestClient) -> None:
    policy = api.get("/").headers["content-security-policy"]
    assert "frame-ancestors 'none'" in policy
    assert "default-src 'self'" in policy
    for docs in ("/docs", "/redoc"):  # FastAPI's would load their scripts from a CDN
        assert api.get(docs).status_code == 404


def test_the_connectivity_switch_connects_and_disconnects(
    api: TestClient, client: errands.Client
) -> None:
    on = api.put("/api/connectivity", json={"online": True}).json()
    assert on["enabled"] is True
    off = api.put("/api/connectivity", json={"online": False}).json()
    assert off == {**off, "enabled": False, "reason": "disconnected by the application"}
    assert_error(
        api.put("/api/connectivity", json={"online": "maybe"}), 400, "validation_error", "online"
    )


def test_the_event_stream_starts_with_the_current_view(
    api: TestClient, client: errands.Client
) -> None:
    job = client.submit("primes", {"n": 3})
    with api.stream("GET", "/api/events") as events:
        assert events.headers["content-type"].startswith("text/event-stream")
        lines = events.iter_lines()
        assert next(lines) == "event: jobs"
        data = next(lines)
    view = json.loads(data.removeprefix("data: "))
    assert [row["id"] for row in view["jobs"]] == [job.id]
    assert view["status"]["pending"] == 1


@pytest.mark.parametrize(
    ("spec", "kind"),
    [
        ("primes", Kind("primes", {})),
        ('primes={"n": 5}', Kind("primes", {"n": 5})),
        (" fails =[1]", Kind("fails", [1])),
    ],
)
def test_kinds_parse_from_the_command_line(spec: str, kind: Kind) -> None:
    assert parse_kind(spec) == kind


@pytest.mark.parametrize("spec", ["", "=1", "primes={n: 5}"])
def test_bad_kinds_say_why(spec: str) -> None:
    with pytest.raises(errands.ConfigurationError):
        parse_kind(spec)


def test_a_deep_or_unstorable_payload_is_refused(api: TestClient, client: errands.Client) -> None:
    deep: Any = []
    for _ in range(MAX_JSON_DEPTH):
        deep = [deep]
    for payload in (deep, {"text": "nul\u0000"}):
        response = api.post("/api/jobs", json={"kind": "primes", "payload": payload})
        assert_error(response, 400, "validation_error", "cannot be stored")
    assert client.jobs() == []


# -- the local page is local (issue 8) ------------------------------------------------------


@pytest.mark.parametrize("host", ["evil.example:8080", "evil.example", "127.0.0.1:9999", ""])
def test_other_hosts_are_refused(api: TestClient, client: errands.Client, host: str) -> None:
    job = client.submit("primes", {"n": 1})
    for method, path in (("GET", "/api/jobs"), ("POST", f"/api/jobs/{job.id}/cancel")):
        response = api.request(method, path, headers={"Host": host})
        assert_error(response, 403, "forbidden_origin", "its own address")
    submitted = api.post("/api/jobs", json={"kind": "primes"}, headers={"Host": host})
    assert_error(submitted, 403, "forbidden_origin", "its own address")
    assert [j.id for j in client.jobs()] == [job.id]
    stored = client.get(job.id)
    assert stored is not None
    assert not stored.cancelled


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://evil.example"},
        {"Origin": "http://127.0.0.1:9999"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
    ],
)
def test_changes_from_other_origins_are_refused(
    api: TestClient, client: errands.Client, headers: dict[str, str]
) -> None:
    job = client.submit("primes", {"n": 1})
    cancel = api.post(f"/api/jobs/{job.id}/cancel", headers=headers)
    assert_error(cancel, 403, "forbidden_origin", "only the page itself")
    submit = api.post("/api/jobs", json={"kind": "primes"}, headers=headers)
    assert_error(submit, 403, "forbidden_origin", "only the page itself")
    switch = api.put("/api/connectivity", json={"online": True}, headers=headers)
    assert_error(switch, 403, "forbidden_origin", "only the page itself")
    stored = client.get(job.id)
    assert stored is not None
    assert not stored.cancelled
    assert len(client.jobs()) == 1
    # reading is allowed: the browser keeps the answer from the other page anyway
    assert api.get("/api/jobs", headers=headers).status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://127.0.0.1:8080"},
        {"Origin": "http://127.0.0.1:8080", "Sec-Fetch-Site": "same-origin"},
        {"Sec-Fetch-Site": "same-origin"},
        {},  # not a browser (curl, a script): nothing to trick
    ],
)
def test_the_page_itself_may_change_jobs(
    api: TestClient, client: errands.Client, headers: dict[str, str]
) -> None:
    job = client.submit("primes", {"n": 1})
    assert api.post(f"/api/jobs/{job.id}/cancel", headers=headers).status_code == 200
    stored = client.get(job.id)
    assert stored is not None
    assert stored.cancelled


def test_the_page_answers_its_loopback_names_on_its_port(client: errands.Client) -> None:
    app = create_app(client, [Kind("primes")], hosts=page_hosts(8123))
    for name in ("127.0.0.1", "localhost", "[::1]"):
        with TestClient(app, base_url=f"http://{name}:8123") as local:
            assert local.get("/api/jobs").status_code == 200
    with TestClient(app, base_url="http://127.0.0.1:8124") as other_port:
        assert other_port.get("/api/jobs").status_code == 403


def test_submit_with_options(api: TestClient, client: errands.Client) -> None:
    options = {
        "priority": -5,
        "queue": "reports",
        "run_at": "2027-03-04T09:30:00+05:30",
        "max_attempts": 2,
        "unique_key": "report-42",
    }
    created = api.post("/api/jobs", json={"kind": "primes", "payload": {"n": 5}, **options})
    assert created.status_code == 201, created.text
    job = client.get(created.json()["id"])
    assert job is not None
    assert (job.priority, job.queue, job.max_attempts, job.unique_key) == (
        -5,
        "reports",
        2,
        "report-42",
    )
    assert job.run_at == datetime(2027, 3, 4, 4, 0, tzinfo=UTC)
    again = api.post("/api/jobs", json={"kind": "primes", **options})
    assert again.json()["id"] == job.id  # an unfinished job has the key: that one


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"priority": 1001}, "priority must be a whole number from -1000 to 1000, not 1001"),
        ({"priority": "3"}, "priority must be a whole number"),
        ({"priority": True}, "priority must be a whole number"),
        ({"max_attempts": 0}, "max_attempts must be a whole number from 1 to 100, not 0"),
        ({"max_attempts": 2.5}, "max_attempts must be a whole number"),
        ({"queue": ""}, "queue must be 1 to 200 printable characters"),
        ({"queue": "q" * 201}, "queue must be 1 to 200 printable characters"),
        ({"unique_key": "a\tb"}, "unique_key must be 1 to 200 printable characters"),
        ({"run_at": "2027-03-04T09:30"}, "run_at must be an ISO 8601 time with a time zone"),
        ({"run_at": "tomorrow"}, "run_at must be an ISO 8601 time with a time zone"),
        ({"run_at": 1700000000}, "run_at must be an ISO 8601 time with a time zone"),
    ],
)
def test_bad_options_are_refused_and_nothing_is_submitted(
    api: TestClient, client: errands.Client, options: dict[str, Any], words: str
) -> None:
    response = api.post("/api/jobs", json={"kind": "primes", "payload": {}, **options})
    assert_error(response, 400, "validation_error", words)
    assert client.jobs() == []


def test_answer_a_question_locally_once(api: TestClient, client: errands.Client) -> None:
    asking = "01900000-0000-7000-8000-000000000002"
    question = {"name": "ask 1", "text": "Go?", "choices": ["yes", "no"], "asked_at": "2026"}
    row = {"id": asking, "timestamp": "2026-01-01T00:00:00+00:00", "question": question}
    client.replica.apply(
        ShapeResponse(messages=[UpsertMessage(key=asking, row=row)], offset="g_5_5_"), START
    )
    [listed] = api.get("/api/jobs").json()["jobs"]
    assert listed["question"] == {"text": "Go?", "choices": ["yes", "no"], "deadline": None}
    refused = api.post(f"/api/jobs/{asking}/answer", json={"value": "maybe"})
    assert_error(refused, 400, "validation_error", "not one of the question's choices")
    answered = api.post(f"/api/jobs/{asking}/answer", json={"value": "yes"})
    assert answered.status_code == 200, answered.text
    assert (answered.json()["question"], answered.json()["answer"]) == (None, "yes")
    assert answered.json()["pending"] is True
    again = api.post(f"/api/jobs/{asking}/answer", json={"value": "no"})
    assert_error(again, 409, "question_closed", "no question waiting")
    unknown = "01900000-0000-7000-8000-000000000000"
    assert_error(
        api.post(f"/api/jobs/{unknown}/answer", json={"value": "yes"}), 404, "not_found", unknown
    )
    assert client.status.pending == 1  # one answer, uploaded when the client connects
