"""What is accepted can be served, to everyone (issue 8): arbitrary JSON and timestamps
go through the mutation API and the worker's result path, and each either reaches the
Python client's replica and the page's API (``/api/jobs``) intact, or was refused at
the door with a 4xx or a rejection code. Hypothesis drives a real service."""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import errands
from errands.exceptions import PayloadError
from errands.payloads import dump_json
from errands.sync.auth import make_token
from errands.ui import Kind, create_app
from tests.sync.conftest import SECRET, SyncService

EXAMPLES = 40

# Any character, NUL and lone surrogates included: the service must refuse those itself.
ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=8)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | ANY_TEXT
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ANY_TEXT, inner, max_size=4),
    max_leaves=12,
)


@st.composite
def deep(draw: st.DrawFn) -> Any:
    """Arrays nested around the write path's depth limit."""
    value: Any = draw(SCALARS)
    for _ in range(draw(st.integers(55, 300))):  # pydantic stops at 255
        value = [value]
    return value


PAYLOADS = JSON | deep()
OFFSETS = st.timedeltas(timedelta(hours=-23, minutes=-59), timedelta(hours=23, minutes=59))
# Near the ends of the calendar an offset can push the instant out of years 1 to 9999.
MOMENTS = (
    st.datetimes()
    | st.datetimes(max_value=datetime(1, 1, 2))
    | st.datetimes(min_value=datetime(9999, 12, 30))
)
TIMESTAMPS = st.one_of(
    st.builds(
        lambda moment, offset: moment.replace(tzinfo=timezone(offset)).isoformat(),
        MOMENTS,
        OFFSETS.map(lambda d: timedelta(minutes=d // timedelta(minutes=1))),
    ),
    st.datetimes().map(datetime.isoformat),  # no time zone: taken as UTC
    ANY_TEXT,
)


def same(sent: Any, got: Any) -> bool:
    """JSON equality as jsonb keeps it: numbers by value (1e16 comes back as an int)."""
    if isinstance(sent, bool) or isinstance(got, bool):
        return sent is got
    if isinstance(sent, int | float) and isinstance(got, int | float):
        return math.isclose(float(sent), float(got), rel_tol=1e-15, abs_tol=0.0)
    if isinstance(sent, list) and isinstance(got, list):
        return len(sent) == len(got) and all(same(a, b) for a, b in zip(sent, got, strict=True))
    if isinstance(sent, dict) and isinstance(got, dict):
        return sent.keys() == got.keys() and all(same(sent[k], got[k]) for k in sent)
    return bool(sent == got)


def instant(text: str) -> datetime:
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@pytest.fixture
def replica_client(service: SyncService, tmp_path: Path) -> Iterator[errands.Client]:
    token = make_token(SECRET, "alice")
    with errands.Client(replica=tmp_path / "r.db", server=service.url, token=token) as client:
        yield client


@pytest.fixture
def page(replica_client: errands.Client) -> Iterator[TestClient]:
    app = create_app(replica_client, [Kind("default")], limit=1000, online=False)
    with TestClient(app, base_url="http://127.0.0.1:8080") as api:
        yield api


def page_job(page: TestClient, key: str) -> dict[str, Any]:
    jobs = page.get("/api/jobs").json()["jobs"]
    (job,) = [j for j in jobs if j["id"] == key]
    return dict(job)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(payload=PAYLOADS, timestamp=TIMESTAMPS, result=PAYLOADS)
def test_what_is_accepted_reaches_the_client_and_the_page(
    alice: httpx.Client,
    replica_client: errands.Client,
    page: TestClient,
    database_url: str,
    payload: Any,
    timestamp: str,
    result: Any,
) -> None:
    key = str(uuid.uuid4())
    values = {"kind": "default", "payload": payload, "timestamp": timestamp}
    body = {"mutations": [{"id": key, "table": "background_jobs", "op": "insert", "key": key}]}
    body["mutations"][0]["values"] = values
    # ASCII JSON: lone surrogates travel escaped, as any JSON client may send them.
    answer = alice.post(
        "/v1/mutations", content=json.dumps(body), headers={"Content-Type": "application/json"}
    )
    assert answer.status_code < 500, answer.text
    if answer.status_code >= 400 or answer.json()["results"][0]["status"] == "rejected":
        refusal = answer.json()
        code = refusal["error"]["code"] if "error" in refusal else refusal["results"][0]["code"]
        assert code in {"validation_error", "payload_too_large"}, refusal
        event("refused at the door")
        return
    # The worker's result path: what dump_json refuses fails the job clearly instead.
    try:
        stored_result = dump_json(result, "result")
    except PayloadError:
        stored_result = None
        event("result refused")
    else:
        event("result stored")
        with psycopg.connect(database_url) as conn:
            conn.execute(
                "UPDATE background_jobs SET result = %s::jsonb WHERE id = %s",
                (stored_result, key),
            )
    replica_client.sync()
    job = replica_client.get(key)
    assert job is not None
    event("accepted and delivered")
    assert not job.pending
    assert same(payload, job.payload)
    assert job.timestamp == instant(timestamp)
    shown = page_job(page, key)
    assert same(payload, shown["payload"])
    assert datetime.fromisoformat(shown["timestamp"]) == instant(timestamp)
    if stored_result is not None:
        assert same(result, job.result)
        assert same(result, shown["result"])
