"""Permissions: a user sees and changes only its own jobs, writes only client columns;
tokens that are expired, unsigned or signed with another secret are refused."""

from __future__ import annotations

import time

import httpx
import jwt
import psycopg
import pytest

from errands.sync.auth import make_token
from tests.sync.api import JOBS, error_code, insert, mutation, post, read, sync_all
from tests.sync.conftest import SECRET, SyncService

SERVER_COLUMNS = ["progress", "result", "completed", "owner", "state", "error", "attempts"]


def row(database_url: str, key: str) -> tuple[object, ...]:
    with psycopg.connect(database_url) as conn:
        found = conn.execute(
            "SELECT owner, state, progress, result, completed, cancelled FROM background_jobs"
            " WHERE id = %s",
            (key,),
        ).fetchone()
    assert found is not None
    return tuple(found)


def test_a_user_cannot_read_another_users_jobs(
    alice: httpx.Client, bob: httpx.Client, operator: httpx.Client
) -> None:
    mine = insert(alice)
    theirs = insert(bob)
    alice_rows, _ = sync_all(alice)
    assert set(alice_rows) == {mine}
    # asking for bob's rows by filter gives nothing: the permission filter is ANDed
    filtered, _ = sync_all(alice, where=[{"column": "owner", "op": "eq", "value": "bob"}])
    assert filtered == {}
    everything, _ = sync_all(operator)
    assert set(everything) == {mine, theirs}


def test_a_user_hears_nothing_of_another_users_changes(
    alice: httpx.Client, bob: httpx.Client, operator: httpx.Client
) -> None:
    _, offset = sync_all(alice)
    theirs = insert(bob)
    post(bob, mutation("update", theirs, {"cancelled": True}))
    post(operator, mutation("delete", theirs))
    mine = insert(alice)
    changes = read(alice, offset, live="true")
    keys = {getattr(m, "key", None) for m in changes.messages} - {None}
    assert keys == {mine}


def test_a_user_cannot_change_or_delete_another_users_job(
    alice: httpx.Client, bob: httpx.Client, database_url: str
) -> None:
    theirs = insert(bob)
    before = row(database_url, theirs)
    cancel = post(alice, mutation("update", theirs, {"cancelled": True}))
    delete = post(alice, mutation("delete", theirs))
    assert cancel.results[0].code == "not_found"
    assert delete.results[0].code == "forbidden_operation"
    assert row(database_url, theirs) == before


@pytest.mark.parametrize("column", SERVER_COLUMNS)
def test_no_client_writes_server_columns(
    alice: httpx.Client, operator: httpx.Client, database_url: str, column: str
) -> None:
    key = insert(alice)
    before = row(database_url, key)
    value = {"progress": 1, "result": {"x": 1}, "completed": True, "owner": "eve"}.get(
        column, "completed"
    )
    for client in (alice, operator):
        update = post(client, mutation("update", key, {column: value}))
        created = post(client, mutation("insert", key[:-4] + "0000", {column: value}))
        assert update.results[0].code == "forbidden_column"
        assert created.results[0].code == "forbidden_column"
    assert row(database_url, key) == before


def _status(service: SyncService, token: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return httpx.get(f"{service.url}/v1/me", headers=headers, timeout=10)


def test_bad_tokens_are_refused(service: SyncService) -> None:
    now = int(time.time())
    claims = {"sub": "alice", "exp": now + 600}
    cases = {
        "missing": None,
        "garbage": "not.a.token",
        "other secret": jwt.encode(claims, "another-secret-0123456789abcdef01234", "HS256"),
        "unsigned": jwt.encode(claims, None, algorithm="none"),
        "no expiry": jwt.encode({"sub": "alice"}, SECRET, "HS256"),
        "no subject": jwt.encode({"exp": now + 600}, SECRET, "HS256"),
        "odd operator": jwt.encode(claims | {"operator": "yes"}, SECRET, "HS256"),
        "NUL subject": jwt.encode(claims | {"sub": "a\x00"}, SECRET, "HS256"),
    }
    for name, token in cases.items():
        answer = _status(service, token)
        assert answer.status_code == 401, name
        assert error_code(answer) == "unauthorized", name
    expired = make_token(SECRET, "alice", expires_in=-10)
    answer = _status(service, expired)
    assert answer.status_code == 401
    assert error_code(answer) == "token_expired"
    # every endpoint is guarded, not only /me
    anonymous = httpx.get(f"{service.url}{JOBS}", params={"offset": "-1"}, timeout=10)
    assert anonymous.status_code == 401
    # an invalid body too: the token is checked first
    anonymous_write = httpx.post(f"{service.url}/v1/mutations", json={"mutations": []})
    assert (anonymous_write.status_code, error_code(anonymous_write)) == (401, "unauthorized")


def test_the_token_names_the_caller(service: SyncService) -> None:
    for user, operator in (("alice", False), ("root", True)):
        answer = _status(service, make_token(SECRET, user, operator=operator))
        assert answer.status_code == 200
        assert answer.json()["user"] == user
        assert answer.json()["operator"] is operator


def test_only_operators_read_the_counters(alice: httpx.Client, operator: httpx.Client) -> None:
    refused = alice.get("/v1/stats")
    assert (refused.status_code, error_code(refused)) == (403, "forbidden")
    before = operator.get("/v1/stats").json()["shape_queries"]
    read(alice)  # a plain read runs one query of its own
    assert operator.get("/v1/stats").json()["shape_queries"] == before + 1
