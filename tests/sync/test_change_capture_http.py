"""The change-capture property again, end to end: the readers are HTTP clients of a real
``errands server`` process, following their shapes from offset to offset."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings

from errands.protocol import ShapeResponse
from tests.sync.conftest import SyncService
from tests.sync.history import (
    SHAPES,
    History,
    Reader,
    Writer,
    check_final_state,
    run,
    shapes,
    steps,
)

_runs = itertools.count()


@pytest.fixture
def clients(service: SyncService) -> Iterator[dict[str | None, httpx.Client]]:
    made = {"a": service.client("a"), None: service.client("ops", operator=True)}
    try:
        yield made
    finally:
        for client in made.values():
            client.close()


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=steps, chosen=shapes)
def test_http_readers_follow_concurrent_writers_exactly(
    database_url: str,
    writers: list[Writer],
    clients: dict[str | None, httpx.Client],
    ops: list[tuple[Any, ...]],
    chosen: list[int],
) -> None:
    kind = f"http{next(_runs)}"
    history = History(kind, writers)
    readers = [Reader(*SHAPES[i]) for i in chosen]

    def read(reader: Reader) -> ShapeResponse:
        where = [{"column": "kind", "op": "eq", "value": kind}, *reader.filters]
        answer = clients[reader.owner].get(
            "/v1/shapes/background_jobs",
            params={"offset": reader.offset, "where": json.dumps(where)},
        )
        assert answer.status_code == 200, answer.text
        return ShapeResponse.model_validate(answer.json())

    run(history, readers, ops, read)
    check_final_state(database_url, kind, readers)
