"""A row the client cannot read (written by SQL around the service's checks) is skipped
with a warning; it never fails the whole sync, and every other row keeps flowing."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

from errands.client.replica import Replica
from errands.protocol import ControlMessage, DeleteMessage, Offset, ShapeResponse, UpsertMessage
from tests.client.processes import SyncServer, token
from tests.client.rows import server_row
from tests.helpers import ErrandsProcess

UNREADABLE = [
    {"timestamp": "10000-01-01T13:59:59+00:00"},
    {"timestamp": "0001-12-31T00:01:00+00:00 BC"},
    {"started_at": "infinity"},
    {"progress": "lots"},
]


def at(xmin: int) -> str:
    return Offset("gen1", xmin, xmin).encode()


@pytest.mark.parametrize("bad", UNREADABLE)
def test_the_replica_skips_a_row_it_cannot_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, bad: dict[str, Any]
) -> None:
    replica = Replica(tmp_path / "replica.db")
    good, broken = str(uuid.uuid4()), str(uuid.uuid4())
    first = [UpsertMessage(key=k, row=server_row(k)) for k in (good, broken)]
    replica.apply(
        ShapeResponse(messages=[*first, ControlMessage(type="up-to-date")], offset=at(5)), "-1"
    )
    # model_construct: as if the protocol's own check had let it through
    unreadable = UpsertMessage.model_construct(key=broken, row=server_row(broken, **bad))
    later = ShapeResponse.model_construct(
        messages=[unreadable, ControlMessage(type="up-to-date")], offset=at(6)
    )
    with caplog.at_level(logging.WARNING, "errands.client"):
        assert replica.apply(later, at(5))
    assert [job.id for job in replica.jobs()] == [good]
    assert replica.offset() == at(6)
    assert any(broken in r.getMessage() and "skipped" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("bad", UNREADABLE[:3])
def test_the_protocol_turns_an_unreadable_row_into_a_delete_with_its_reason(
    bad: dict[str, Any],
) -> None:
    key = str(uuid.uuid4())
    wire = {
        "messages": [{"type": "upsert", "key": key, "row": server_row(key, **bad)}],
        "offset": at(5),
    }
    (message,) = ShapeResponse.model_validate(wire).messages
    assert isinstance(message, DeleteMessage)
    assert message.error is not None
    assert message.error.code == "unservable_row"
    assert next(iter(bad)) in message.error.message


def test_the_command_line_lists_the_other_jobs(
    tmp_path: Path, server: SyncServer, database_url: str
) -> None:
    server.start()
    with psycopg.connect(database_url) as conn:
        for kind, timestamp in (
            ("visible", "2026-01-01T00:00:00Z"),
            ("hidden", "10000-01-01 13:59:59+00"),
        ):
            conn.execute(
                "INSERT INTO background_jobs (id, kind, owner, timestamp)"
                " VALUES (%s, %s, 'carol', %s)",
                (uuid.uuid4(), kind, timestamp),
            )
    env = {
        "ERRANDS_SERVER": server.url,
        "ERRANDS_REPLICA": str(tmp_path / "cli.db"),
        "ERRANDS_TOKEN": token("carol"),
        "COLUMNS": "200",
    }
    outputs = []
    for command in ("sync", "jobs"):
        process = ErrandsProcess(command, env=env)
        try:
            code = process.process.wait(90)
            outputs.append(process.output())
        finally:
            process.close()
        assert code == 0, outputs[-1]
        assert "Traceback" not in outputs[-1]
    synced, listed = outputs
    assert "skipped" in synced
    assert "unservable_row" in synced
    assert "visible" in listed
    assert "hidden" not in listed
