"""No user can break another's sync: each test is a row of issue 8's table, tried as an
attacker would with an ordinary user's token (or none) against the real service."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt
import psycopg
import pytest
from psycopg import sql

from errands.protocol import MAX_JSON_DEPTH, ControlMessage, ShapeResponse
from errands.sync.auth import make_token
from tests.helpers import wait_for
from tests.sync.api import JOBS, error_code, insert, mutation, post, read, sync_all
from tests.sync.conftest import SECRET, StartServer, SyncService

DEEP = 254
"""The nesting the issue tried: well past what pydantic can serialise."""


def nested(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = [value]
    return value


def sql_job(database_url: str, owner: str = "alice", **columns: Any) -> str:
    """A job written by plain SQL, around the service's checks."""
    key = str(uuid.uuid4())
    values = {"id": key, "kind": "sql", "owner": owner, **columns}
    statement = sql.SQL("INSERT INTO background_jobs ({}) VALUES ({})").format(
        sql.SQL(", ").join(map(sql.Identifier, values)),
        sql.SQL(", ").join(sql.Placeholder() * len(values)),
    )
    with psycopg.connect(database_url) as conn:
        conn.execute(statement, list(values.values()))
    return key


def stats(service: SyncService) -> dict[str, Any]:
    with service.client("root", operator=True) as client:
        return dict(client.get("/v1/stats").json())


@pytest.fixture
def slow_service(start_server: StartServer) -> SyncService:
    """A service holding live reads for 30 s, with small per-user limits."""
    return start_server("--live-hold", "30", "--max-live-readers", "4", "--max-shapes", "2")


def changes(answer: ShapeResponse) -> dict[str, Any]:
    """The upserts and deletes of an answer, by key."""
    return {m.key: m for m in answer.messages if not isinstance(m, ControlMessage)}


def events(response: httpx.Response) -> Iterator[ShapeResponse]:
    for line in response.iter_lines():
        if line.startswith("data: "):
            yield ShapeResponse.model_validate_json(line.removeprefix("data: "))


# -- what is accepted can be served --------------------------------------------------------


def test_a_deep_payload_is_refused_at_the_door(alice: httpx.Client) -> None:
    deep, fits = str(uuid.uuid4()), str(uuid.uuid4())
    response = post(
        alice,
        mutation("insert", deep, {"kind": "deep", "payload": nested(DEEP)}),
        mutation("insert", fits, {"kind": "fits", "payload": nested(MAX_JSON_DEPTH - 1)}),
    )
    assert [(r.status, r.code) for r in response.results] == [
        ("rejected", "validation_error"),
        ("applied", None),
    ]
    assert "nested" in (response.results[0].message or "")
    rows, _ = sync_all(alice)
    assert set(rows) == {fits}


def test_a_row_written_deep_by_sql_stalls_no_one(
    start_server: StartServer, database_url: str
) -> None:
    service = start_server("--live-hold", "30")
    with service.client("alice") as alice, service.client("root", operator=True) as root:
        _, offset = sync_all(alice)
        with alice.stream("GET", f"{JOBS}/stream", params={"offset": offset}) as stream:
            answers = events(stream)
            assert next(answers).up_to_date
            bad = sql_job(database_url, payload=json.dumps(nested(DEEP)))
            good = sql_job(database_url)
            seen: dict[str, Any] = {}
            while good not in seen or bad not in seen:
                seen.update(changes(next(answers)))
            # The stream goes on after the bad row.
            later = sql_job(database_url)
            while later not in seen:
                seen.update(changes(next(answers)))
        assert seen[good].type == "upsert"
        assert seen[bad].type == "delete"
        assert seen[bad].error.code == "unservable_row"
        assert "nested" in seen[bad].error.message
        # Plain reads of every shape that holds the row, the operator's too, answer 200.
        for client in (alice, root):
            rows, _ = sync_all(client)
            assert good in rows
            assert bad not in rows


@pytest.mark.parametrize("timestamp", ["0001-01-01T00:00:00+23:59", "9999-12-31T23:59:59-14:00"])
def test_timestamps_no_client_can_parse_are_refused(alice: httpx.Client, timestamp: str) -> None:
    response = post(alice, mutation("insert", str(uuid.uuid4()), {"timestamp": timestamp}))
    assert response.results[0].code == "validation_error"
    rows, _ = sync_all(alice)
    assert rows == {}


@pytest.mark.parametrize(
    "timestamp", ["0001-12-31 00:01:00+00 BC", "10000-01-01 13:59:59+00", "infinity"]
)
def test_a_row_with_such_a_timestamp_written_by_sql_is_skipped(
    alice: httpx.Client, database_url: str, timestamp: str
) -> None:
    bad = sql_job(database_url, timestamp=timestamp)
    good = sql_job(database_url)
    by_key = changes(read(alice))
    assert by_key[good].type == "upsert"
    assert (by_key[bad].type, by_key[bad].error.code) == ("delete", "unservable_row")


LONE = "\ud800"


def post_json(client: httpx.Client, body: Any) -> httpx.Response:
    """Post ``body`` as ASCII JSON: lone surrogates travel escaped (httpx would refuse
    to encode them)."""
    headers = {"Content-Type": "application/json"}
    return client.post("/v1/mutations", content=json.dumps(body), headers=headers)


def test_lone_surrogates_and_nul_are_refused_everywhere(
    service: SyncService, alice: httpx.Client
) -> None:
    # A filter value, an `in` value, a payload filter: 400, and the connection serves on.
    for where in (
        [{"column": "state", "value": LONE}],
        [{"column": "kind", "op": "in", "value": ["a", LONE]}],
        [{"column": "payload", "value": {"k": LONE}}],
        [{"column": "kind", "value": "nul\x00"}],
    ):
        answer = alice.get(JOBS, params={"offset": "-1", "where": json.dumps(where)})
        assert (answer.status_code, error_code(answer)) == (400, "validation_error"), where
    # An inserted kind or payload: that mutation is rejected, the rest of the batch applies.
    good = str(uuid.uuid4())
    batch = [
        mutation("insert", str(uuid.uuid4()), {"kind": LONE}),
        mutation("insert", str(uuid.uuid4()), {"kind": "k", "payload": [LONE]}),
        mutation("insert", str(uuid.uuid4()), {"kind": "k", "payload": {LONE: 1}}),
        mutation("insert", str(uuid.uuid4()), {"kind": "k", LONE: 1}),
        mutation("insert", good, {"kind": "fine"}),
    ]
    # json.dumps escapes the surrogates as \ud800, which is how they travel in JSON.
    answer = post_json(alice, {"mutations": batch})
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert [r["code"] for r in results] == ["validation_error"] * 3 + ["unknown_column", None]
    # A mutation id: the batch is refused as a whole.
    refused = post_json(alice, {"mutations": [mutation("insert", str(uuid.uuid4()), id=LONE)]})
    assert (refused.status_code, error_code(refused)) == (400, "validation_error")
    # A token's subject.
    claims = {"sub": f"al{LONE}ice", "exp": int(time.time()) + 600}
    forged = jwt.encode(claims, SECRET, "HS256")
    me = httpx.get(f"{service.url}/v1/me", headers={"Authorization": f"Bearer {forged}"})
    assert (me.status_code, error_code(me)) == (401, "unauthorized")
    rows, _ = sync_all(alice)
    assert set(rows) == {good}


def test_a_deeply_nested_filter_value_is_a_400(alice: httpx.Client) -> None:
    for depth in (256, 5000):
        where = '[{"column": "payload", "value": ' + "[" * depth + "]" * depth + "}]"
        answer = alice.get(JOBS, params={"offset": "-1", "where": where})
        assert (answer.status_code, error_code(answer)) == (400, "validation_error"), depth
    assert read(alice).up_to_date


# -- fair share ----------------------------------------------------------------------------


def test_live_readers_and_shapes_are_limited_per_user(slow_service: SyncService) -> None:
    def shape(n: int) -> dict[str, str]:
        return {"offset": "-1", "where": json.dumps([{"column": "kind", "value": f"k{n}"}])}

    with (
        slow_service.client("alice") as alice,
        slow_service.client("bob") as bob,
        contextlib.ExitStack() as held,
    ):
        streams = [
            held.enter_context(alice.stream("GET", f"{JOBS}/stream", params=shape(n % 2)))
            for n in range(3)
        ]
        with alice.stream("GET", f"{JOBS}/stream", params=shape(1)) as last:
            assert [s.status_code for s in [*streams, last]] == [200] * 4
            fifth = alice.get(f"{JOBS}/stream", params=shape(0))
            assert (fifth.status_code, error_code(fifth)) == (429, "too_many_live_readers")
            assert int(fifth.headers["Retry-After"]) >= 1

        def third_shape_refused() -> bool:  # once the closed stream's place is given back
            answer = alice.get(JOBS, params=shape(2) | {"live": "true"})
            assert answer.status_code == 429
            return error_code(answer) == "too_many_shapes" and "Retry-After" in answer.headers

        wait_for(third_shape_refused, what="a third shape to be refused")
        # Another user is not affected, and plain reads never count.
        assert alice.get(JOBS, params=shape(3)).status_code == 200
        for n in range(2):
            with bob.stream("GET", f"{JOBS}/stream", params=shape(n)) as theirs:
                assert theirs.status_code == 200
        held.close()
        # Closed readers give their place back.
        wait_for(
            lambda: alice.get(JOBS, params=shape(5) | {"live": "true"}).status_code == 200,
            what="alice's readers to be released",
        )


def test_a_long_poll_ends_when_its_client_disconnects(slow_service: SyncService) -> None:
    with slow_service.client("alice") as alice:
        _, offset = sync_all(alice)

    def poll(n: int) -> None:
        where = json.dumps([{"column": "kind", "value": f"k{n % 2}"}])
        with slow_service.client("alice") as client:
            client.get(JOBS, params={"offset": offset, "where": where, "live": "true"}, timeout=5)

    with ThreadPoolExecutor(4) as pool:
        polls = [pool.submit(poll, n) for n in range(4)]
        wait_for(lambda: stats(slow_service)["waiting"] == 4, what="four held long polls")
        for done in polls:  # each client gives up after 5 s and closes its connection
            with pytest.raises(httpx.ReadTimeout):
                done.result()
    started = time.monotonic()
    wait_for(lambda: stats(slow_service)["waiting"] == 0, timeout=60, what="the waits to end")
    queries = stats(slow_service)["shape_queries"]
    time.sleep(1)  # a few polls of the service: nobody is left to query for
    assert stats(slow_service)["shape_queries"] == queries
    assert time.monotonic() - started < 30 / 2, "the waits lasted as long as the hold"


def raw_request(url: str, head: str, body: bytes = b"", *, wait: float = 10) -> bytes:
    """Send ``head`` (and ``body``) over a plain socket, leave the connection open, and
    return what the server answers within ``wait`` seconds."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=wait) as sock:
        sock.sendall(head.encode("latin-1") + b"\r\n" + body)
        answer = b""
        try:
            while not _complete(answer):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                answer += chunk
        except (TimeoutError, ConnectionResetError):
            pass  # a server that closes with our body unread may reset the connection
        return answer


def _complete(answer: bytes) -> bool:
    """Whether ``answer`` holds a whole response with a Content-Length body."""
    head, found, body = answer.partition(b"\r\n\r\n")
    length = re.search(rb"content-length: *(\d+)", head, re.IGNORECASE)
    return bool(found) and length is not None and len(body) >= int(length[1])


def test_the_token_is_checked_before_the_body_is_read(service: SyncService) -> None:
    head = (
        "POST /v1/mutations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n"
    )
    chunk = b"%x\r\n%s\r\n" % (65536, b" " * 65536)
    answer = raw_request(service.url, head, chunk)  # the body never finishes
    # The refusal comes while the body is still on its way. (Its JSON may be lost: the
    # server closes the connection with the rest of the body unread, and a reset then
    # can discard what the client had not read yet; the status line is the proof.)
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]


def test_oversized_headers_are_refused(service: SyncService) -> None:
    token = "x" * (64 * 1024)
    answer = httpx.get(
        f"{service.url}/v1/me", headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    assert (answer.status_code, error_code(answer)) == (431, "headers_too_large")
    many = {f"X-Filler-{n}": "y" * 4000 for n in range(10)}
    answer = httpx.get(f"{service.url}/v1/me", headers=many, timeout=30)
    assert (answer.status_code, error_code(answer)) == (431, "headers_too_large")


def test_a_body_that_stops_arriving_times_out(start_server: StartServer) -> None:
    service = start_server("--body-timeout", "0.5")
    token = make_token(SECRET, "alice")
    head = (
        f"POST /v1/mutations HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
        "Content-Type: application/json\r\nContent-Length: 1000\r\n"
    )
    answer = raw_request(service.url, head, b'{"mutations": [')
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"request_timeout" in answer


# -- idempotency ---------------------------------------------------------------------------


def test_a_mutation_id_reused_for_another_change_is_a_409(
    alice: httpx.Client, database_url: str
) -> None:
    key, other = str(uuid.uuid4()), str(uuid.uuid4())
    first = mutation("insert", key, {"kind": "once"})
    assert post(alice, first).results[0].status == "applied"
    for reused in (
        mutation("insert", other, {"kind": "once"}, id=first["id"]),  # another key
        mutation("update", key, {"cancelled": True}, id=first["id"]),  # as a cancel
        mutation("insert", key, {"kind": "twice"}, id=first["id"]),  # other values
    ):
        fresh = mutation("insert", str(uuid.uuid4()), {"kind": "fresh"})
        answer = alice.post("/v1/mutations", json={"mutations": [fresh, reused]})
        assert (answer.status_code, error_code(answer)) == (409, "mutation_id_reused")
        assert first["id"] in answer.json()["error"]["message"]
    # the same request again is still a replay
    again = post(alice, first)
    assert (again.results[0].status, again.results[0].replayed) == ("applied", True)
    rows, _ = sync_all(alice)
    assert set(rows) == {key}  # nothing of the refused batches was applied
    assert rows[key]["cancelled"] is False


# -- user names ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "subject", ["ali\u202ece\u200b", "alice\u200b", "\u202eecila", "al\tice", " alice"]
)
def test_subjects_that_look_like_another_user_are_refused(
    service: SyncService, subject: str
) -> None:
    token = jwt.encode({"sub": subject, "exp": int(time.time()) + 600}, SECRET, "HS256")
    me = httpx.get(f"{service.url}/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert (me.status_code, error_code(me)) == (401, "unauthorized")
    assert "user name" in me.json()["error"]["message"]


def test_subjects_are_normalised(service: SyncService) -> None:
    decomposed = "jose\u0301"
    token = jwt.encode({"sub": decomposed, "exp": int(time.time()) + 600}, SECRET, "HS256")
    headers = {"Authorization": f"Bearer {token}"}
    me = httpx.get(f"{service.url}/v1/me", headers=headers)
    assert me.json()["user"] == "jos\u00e9"
    with httpx.Client(base_url=service.url, headers=headers) as composed_alike:
        key = insert(composed_alike)
    with service.client("jos\u00e9") as precomposed:
        rows, _ = sync_all(precomposed)
    assert set(rows) == {key}
