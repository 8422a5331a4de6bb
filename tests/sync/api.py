"""Small helpers that speak the sync protocol over HTTP, for the tests."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx

from errands.protocol import MutationResponse, ShapeResponse

JOBS = "/v1/shapes/background_jobs"


def mutation(
    op: str, key: str, values: dict[str, Any] | None = None, **extra: Any
) -> dict[str, Any]:
    """One mutation with a fresh id."""
    return {
        "id": extra.get("id", str(uuid.uuid4())),
        "table": extra.get("table", "background_jobs"),
        "op": op,
        "key": key,
        "values": values or {},
    }


def post(client: httpx.Client, *mutations: dict[str, Any]) -> MutationResponse:
    """Post a batch that must be accepted as a request (each mutation may be rejected)."""
    answer = client.post("/v1/mutations", json={"mutations": list(mutations)})
    assert answer.status_code == 200, answer.text
    return MutationResponse.model_validate(answer.json())


def insert(client: httpx.Client, **values: Any) -> str:
    """Insert a job and return its key; the insert must be applied."""
    key = str(uuid.uuid4())
    response = post(client, mutation("insert", key, {"kind": "test", **values}))
    assert response.results[0].status == "applied", response
    return key


def read(
    client: httpx.Client,
    offset: str = "-1",
    where: list[dict[str, Any]] | None = None,
    **params: Any,
) -> ShapeResponse:
    """One shape read that must succeed."""
    query = {"offset": offset, **params}
    if where is not None:
        query["where"] = json.dumps(where)
    answer = client.get(JOBS, params=query)
    assert answer.status_code == 200, (answer.text, answer.headers.get("x-errands-reason"))
    return ShapeResponse.model_validate(answer.json())


def sync_all(
    client: httpx.Client, where: list[dict[str, Any]] | None = None, offset: str = "-1"
) -> tuple[dict[str, dict[str, Any]], str]:
    """Follow a shape from ``offset`` until up-to-date; the rows and the last offset."""
    rows: dict[str, dict[str, Any]] = {}
    while True:
        response = read(client, offset, where)
        for m in response.messages:
            if m.type == "upsert":
                rows[m.key] = m.row
            elif m.type == "delete":
                rows.pop(m.key, None)
        offset = response.offset
        if response.up_to_date:
            return rows, offset


def error_code(answer: httpx.Response) -> str:
    """The code of an error answer (which must have the error shape)."""
    body = answer.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message"}, body
    assert body["error"]["message"]
    return str(body["error"]["code"])
