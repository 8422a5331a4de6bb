"""The write path: a batch of client mutations, applied in one transaction.

Each mutation is checked against what the caller may do, then applied inside its own
savepoint, so a rejected mutation changes nothing while the others of the batch still
apply. Every mutation id is recorded with its result, per owner, before it is applied:
a retried batch finds its ids recorded and gets the same results back marked
``replayed``, and two requests racing with the same id take turns on that record.

What a caller may do:

* insert a job with only the client-owned columns (``CLIENT_INSERT_COLUMNS``); the
  owner is the caller and the received time is the server's;
* update only ``cancelled``, only to true, only on its own jobs (an operator: any job);
* delete: operators only (pruning the audit log is an operator's act); clients never.
"""

from __future__ import annotations

import json
import uuid
from typing import Any, LiteralString

from psycopg import AsyncConnection, IsolationLevel
from psycopg.errors import DataError, DeadlockDetected, IntegrityError, SerializationFailure
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from errands.protocol import (
    CLIENT_INSERT_COLUMNS,
    CLIENT_UPDATE_COLUMNS,
    JOB_COLUMNS,
    JOBS_TABLE,
    MAX_KIND_LENGTH,
    MAX_PAYLOAD_BYTES,
    ErrorCode,
    Mutation,
    MutationBatch,
    MutationResponse,
    MutationResult,
)
from errands.queries import query
from errands.sync.auth import Caller
from errands.sync.errors import BadRequest
from errands.sync.filters import check_text, parse_timestamp
from errands.sync.shapes import SYNC_QUERIES, snapshot_offset
from errands.tracing import job_span, valid_traceparent

BATCH_ATTEMPTS = 3


class Rejection(Exception):  # a result, raised only to leave the checks early
    """Why a mutation is not applied."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _q(name: str) -> LiteralString:
    return query(name, SYNC_QUERIES)


async def apply_batch(
    pool: AsyncConnectionPool[Any], caller: Caller, batch: MutationBatch
) -> MutationResponse:
    """Apply a batch for ``caller``; retried when Postgres resolves a deadlock with a
    concurrent batch by aborting this one."""
    if any("\x00" in m.id for m in batch.mutations):
        # The ids are recorded as text, which cannot hold NUL: nothing could be recorded.
        raise BadRequest("a mutation id contains a NUL character", ErrorCode.VALIDATION_ERROR)
    for attempt in range(BATCH_ATTEMPTS):
        try:
            async with pool.connection() as conn:
                return await _apply(conn, caller, batch)
        except (DeadlockDetected, SerializationFailure):
            if attempt == BATCH_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


async def _apply(
    conn: AsyncConnection[Any], caller: Caller, batch: MutationBatch
) -> MutationResponse:
    await conn.set_isolation_level(IsolationLevel.READ_COMMITTED)
    await conn.set_read_only(False)
    async with conn.transaction():
        row = await (await conn.execute(_q("batch_txid"))).fetchone()
        assert row is not None
        txid = int(row[0])
        results = [await _apply_one(conn, caller, m) for m in batch.mutations]
    # Taken after the commit, so it covers the batch's transaction.
    position = await (await conn.execute(_q("current_position"))).fetchone()
    assert position is not None
    offset = snapshot_offset(*position)
    return MutationResponse(results=results, txid=txid, offset=offset.encode())


async def _apply_one(conn: AsyncConnection[Any], caller: Caller, m: Mutation) -> MutationResult:
    ids = {"owner": caller.user, "id": m.id}
    claimed = await (await conn.execute(_q("claim_mutation"), ids)).fetchone()
    if claimed is None:
        recorded = await (await conn.execute(_q("recorded_mutation"), ids)).fetchone()
        assert recorded is not None
        status, code, message = recorded
        return MutationResult(id=m.id, status=status, replayed=True, code=code, message=message)
    try:
        params = _check(caller, m)
        try:
            # The insert of a job submitted in a trace joins that trace.
            with job_span(f"errands.{m.op}", params.get("traceparent"), "server"):
                async with conn.transaction():  # a savepoint: a failure undoes only this one
                    await _write(conn, caller, m, params)
        except (IntegrityError, DataError) as exc:
            raise Rejection(
                ErrorCode.VALIDATION_ERROR, f"the database refused it: {exc.diag.message_primary}"
            ) from None
    except Rejection as rejection:
        await conn.execute(
            _q("record_rejection"), ids | {"code": rejection.code, "message": rejection.message}
        )
        return MutationResult(
            id=m.id, status="rejected", code=rejection.code, message=rejection.message
        )
    return MutationResult(id=m.id, status="applied")


def _check(caller: Caller, m: Mutation) -> dict[str, Any]:
    """The query parameters of an allowed mutation; :class:`Rejection` otherwise."""
    if m.table != JOBS_TABLE:
        raise Rejection(ErrorCode.UNKNOWN_TABLE, f"unknown table {m.table[:80]!r}")
    try:
        job_id = uuid.UUID(m.key)
    except ValueError:
        raise Rejection(ErrorCode.VALIDATION_ERROR, "the key must be a job's UUID") from None
    unknown = sorted(set(m.values) - set(JOB_COLUMNS))
    if unknown:
        raise Rejection(ErrorCode.UNKNOWN_COLUMN, f"unknown column(s): {', '.join(unknown)}")
    params: dict[str, Any] = {"id": job_id, "owner": caller.user, "operator": caller.operator}
    if m.op == "insert":
        return params | _insert_values(job_id, m.values)
    if m.op == "update":
        _check_update(m.values)
        return params
    if not caller.operator:
        raise Rejection(
            ErrorCode.FORBIDDEN_OPERATION,
            "clients may not delete jobs; cancel it instead (set cancelled to true)",
        )
    return params


def _forbid_columns(values: dict[str, Any], allowed: frozenset[str]) -> None:
    forbidden = sorted(set(values) - allowed)
    if forbidden:
        raise Rejection(
            ErrorCode.FORBIDDEN_COLUMN,
            f"clients may not write {', '.join(forbidden)}; allowed: {', '.join(sorted(allowed))}",
        )


def _insert_values(job_id: uuid.UUID, values: dict[str, Any]) -> dict[str, Any]:
    _forbid_columns(values, CLIENT_INSERT_COLUMNS)
    if "id" in values and values["id"] != str(job_id):
        raise Rejection(ErrorCode.VALIDATION_ERROR, "values.id differs from the key")
    try:
        timestamp = values.get("timestamp")
        kind = values.get("kind")
        params: dict[str, Any] = {
            "timestamp": None if timestamp is None else parse_timestamp(timestamp),
            "kind": None if kind is None else check_text(kind),
            "payload": None,
            "cancelled": values.get("cancelled"),
            "traceparent": values.get("traceparent"),
        }
    except (TypeError, ValueError) as exc:
        raise Rejection(ErrorCode.VALIDATION_ERROR, f"bad value: {exc}") from None
    if kind is not None and not 0 < len(kind) <= MAX_KIND_LENGTH:
        raise Rejection(ErrorCode.VALIDATION_ERROR, f"kind must have 1 to {MAX_KIND_LENGTH} chars")
    if params["cancelled"] is not None and not isinstance(params["cancelled"], bool):
        raise Rejection(ErrorCode.VALIDATION_ERROR, "cancelled must be true or false")
    if params["traceparent"] is not None and not valid_traceparent(params["traceparent"]):
        raise Rejection(ErrorCode.VALIDATION_ERROR, "traceparent must be a W3C traceparent")
    if "payload" in values:
        params["payload"] = _payload(values["payload"])
    return params


def _payload(payload: Any) -> Jsonb:
    if payload is None:
        raise Rejection(ErrorCode.VALIDATION_ERROR, "the payload must not be null")
    size = len(json.dumps(payload, separators=(",", ":")).encode())
    if size > MAX_PAYLOAD_BYTES:
        raise Rejection(
            ErrorCode.PAYLOAD_TOO_LARGE,
            f"the payload has {size} bytes; the limit is {MAX_PAYLOAD_BYTES}",
        )
    return Jsonb(payload)


def _check_update(values: dict[str, Any]) -> None:
    _forbid_columns(values, CLIENT_UPDATE_COLUMNS)
    if values.get("cancelled") is not True:
        raise Rejection(
            ErrorCode.FORBIDDEN_OPERATION, "the only update allowed is cancelled set to true"
        )


async def _write(
    conn: AsyncConnection[Any], caller: Caller, m: Mutation, params: dict[str, Any]
) -> None:
    name = {"insert": "insert_job", "update": "cancel_job", "delete": "delete_job"}[m.op]
    row = await (await conn.execute(_q(name), params)).fetchone()
    if row is not None:
        return
    if m.op == "insert":
        raise Rejection(ErrorCode.ALREADY_EXISTS, f"a job with id {m.key} already exists")
    whose = "" if caller.operator else " of yours"
    raise Rejection(ErrorCode.NOT_FOUND, f"no job{whose} with id {m.key}")
