"""The write path: a batch of client mutations, applied in one transaction.

Each mutation is checked against what the caller may do, then applied inside its own
savepoint, so a rejected mutation changes nothing while the others of the batch still
apply. Every mutation id is recorded with its result and a fingerprint of its content,
per owner, before it is applied: a retried batch finds its ids recorded and gets the
same results back marked ``replayed``, and two requests racing with the same id take
turns on that record. An id reused with other content (another key, values or
operation) is not a retry: the whole batch is refused with 409
``mutation_id_reused``, and nothing of it is applied.

What a caller may do:

* insert a job with only the client-owned columns (``CLIENT_INSERT_COLUMNS``), each
  value within ``check_job_options``, of a kind declared for clients and with a payload
  its schema accepts (:mod:`errands.sync.kinds`); the owner is the caller, the received
  time the server's, the priority capped by the kind and ``run_at`` never before the
  server's clock. An insert whose ``unique_key`` an unfinished job of the caller already
  has is rejected as ``duplicate``, naming that job (which the caller's shape delivers).
  An id another user's job has is refused exactly like a malformed one: the answer
  reveals nothing of other users' jobs. A caller holding ``max_queued`` queued jobs
  gets 429 ``quota_exceeded`` for a batch that inserts any, and nothing of it is
  applied (the client keeps it and retries). An insert may name the jobs it runs after
  (``after``): jobs of the caller's, that exist or come earlier in the batch, in no
  circle (:mod:`errands.sync.dependencies`);
* update only ``cancelled``, only to true, only on its own jobs (an operator: any job);
* or answer the question pending on one of its own jobs (``answer``; an operator: any
  job's): only while the question waits, and only with one of its choices (a text of
  bounded length if it has none; ``protocol.check_answer``). The ``answer`` query checks
  the same again as it writes, so an answer racing another or the question's deadline
  applies at most once; another user's job is refused as an unknown one is;
* delete: operators only (pruning the audit log is an operator's act); clients never.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, field
from typing import Any, LiteralString

from psycopg import AsyncConnection, IsolationLevel
from psycopg.errors import DataError, DeadlockDetected, IntegrityError, SerializationFailure
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from errands.exceptions import PayloadError
from errands.payloads import PayloadTooLarge, dump_json
from errands.protocol import (
    CLIENT_INSERT_COLUMNS,
    CLIENT_UPDATE_COLUMNS,
    DEPENDENCY_FIELDS,
    JOB_COLUMNS,
    JOBS_TABLE,
    MAX_ANSWER_LENGTH,
    MAX_KIND_LENGTH,
    ErrorCode,
    Mutation,
    MutationBatch,
    MutationResponse,
    MutationResult,
    QuestionClosed,
    check_answer,
    check_job_options,
    parse_timestamp,
)
from errands.queries import query
from errands.sync import dependencies
from errands.sync.auth import Caller
from errands.sync.errors import Conflict, Rejection, TooManyRequests
from errands.sync.filters import check_text
from errands.sync.kinds import ClientKinds, KindRule
from errands.sync.shapes import SYNC_QUERIES, snapshot_offset
from errands.tracing import job_span, valid_traceparent

BATCH_ATTEMPTS = 3
QUOTA_RETRY_AFTER = 5
"""Seconds a caller over its queued-jobs quota is told to wait before retrying."""
UNUSABLE_KEY = "the key is not a usable job id: give each new job a new UUID (UUIDv7)"
"""The one answer for a malformed id and for one that another user's job has."""


@dataclass(frozen=True)
class Door:
    """What the service lets clients ask for: the kinds, and how many queued jobs."""

    kinds: ClientKinds = field(default_factory=ClientKinds)
    max_queued: int | None = None
    """Queued jobs one user may have; a batch that would pass it gets 429."""


def _q(name: str) -> LiteralString:
    return query(name, SYNC_QUERIES)


async def apply_batch(
    pool: AsyncConnectionPool[Any], caller: Caller, batch: MutationBatch, door: Door
) -> MutationResponse:
    """Apply a batch for ``caller``; retried when Postgres resolves a deadlock with a
    concurrent batch by aborting this one."""
    for attempt in range(BATCH_ATTEMPTS):
        try:
            async with pool.connection() as conn:
                return await _apply(conn, caller, batch, door)
        except (DeadlockDetected, SerializationFailure):
            if attempt == BATCH_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


async def _apply(
    conn: AsyncConnection[Any], caller: Caller, batch: MutationBatch, door: Door
) -> MutationResponse:
    await conn.set_isolation_level(IsolationLevel.READ_COMMITTED)
    await conn.set_read_only(False)
    async with conn.transaction():
        row = await (await conn.execute(_q("batch_txid"))).fetchone()
        assert row is not None
        txid = int(row[0])
        rules = await _client_rules(conn, caller, batch, door)
        upload = dependencies.Upload(batch.mutations)
        results = [
            await _apply_one(conn, caller, m, rules, upload.at(i))
            for i, m in enumerate(batch.mutations)
        ]
    # Taken after the commit, so it covers the batch's transaction.
    position = await (await conn.execute(_q("current_position"))).fetchone()
    assert position is not None
    offset = snapshot_offset(*position)
    return MutationResponse(results=results, txid=txid, offset=offset.encode())


async def _client_rules(
    conn: AsyncConnection[Any], caller: Caller, batch: MutationBatch, door: Door
) -> _ClientRules | None:
    """The kind rules a client's inserts go through, after the quota check (429, and
    nothing applied, when the batch would take the caller past it); None for operators."""
    if caller.operator:
        return None
    inserts = [m for m in batch.mutations if m.op == "insert"]
    if inserts and door.max_queued is not None:
        # Checked before the batch, not against its end: a batch larger than what is
        # left of the quota still goes through once the user is under it, so no batch
        # is refused for ever (a user holds at most the quota plus one batch).
        params = {"owner": caller.user, "limit": door.max_queued}
        row = await (await conn.execute(_q("queued_count"), params)).fetchone()
        assert row is not None
        if row[0] >= door.max_queued:
            raise TooManyRequests(
                f"{caller.user!r:.80} has {door.max_queued} queued jobs, its quota; "
                "retry once some have run",
                ErrorCode.QUOTA_EXCEEDED,
                QUOTA_RETRY_AFTER,
            )
    named = {kind for kind in (m.values.get("kind") or "default" for m in inserts) if _text(kind)}
    return _ClientRules(door.kinds, await door.kinds.rules(conn, named) if named else {})


def _text(value: Any) -> bool:
    """Whether ``value`` is text Postgres can take (others are refused one by one)."""
    try:
        check_text(value)
    except (TypeError, ValueError):
        return False
    return True


@dataclass(frozen=True)
class _ClientRules:
    kinds: ClientKinds
    rules: dict[str, KindRule]

    def admit(self, kind: str, payload: Any, priority: int | None) -> int | None:
        return self.kinds.admit(kind, self.rules.get(kind), payload, priority)


def fingerprint(m: Mutation) -> str:
    """What makes two mutations with one id the same request: a digest of the rest."""
    content = [m.table, m.op, m.key, m.values]
    text = json.dumps(content, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


async def _apply_one(
    conn: AsyncConnection[Any],
    caller: Caller,
    m: Mutation,
    rules: _ClientRules | None,
    upload: dependencies.Place,
) -> MutationResult:
    ids = {"owner": caller.user, "id": m.id}
    digest = fingerprint(m)
    claimed = await (
        await conn.execute(_q("claim_mutation"), ids | {"fingerprint": digest})
    ).fetchone()
    if claimed is None:
        recorded = await (await conn.execute(_q("recorded_mutation"), ids)).fetchone()
        assert recorded is not None
        status, code, message, recorded_digest = recorded
        if recorded_digest is not None and recorded_digest != digest:
            raise Conflict(
                f"mutation id {m.id!r:.120} was already used for another change; nothing of "
                "this batch was applied: give every new change an id of its own",
                ErrorCode.MUTATION_ID_REUSED,
            )
        return MutationResult(id=m.id, status=status, replayed=True, code=code, message=message)
    try:
        params = _check(caller, m, rules, upload)
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


def _check(
    caller: Caller, m: Mutation, rules: _ClientRules | None, upload: dependencies.Place
) -> dict[str, Any]:
    """The query parameters of an allowed mutation; :class:`Rejection` otherwise."""
    if caller.read_only:
        raise Rejection(
            ErrorCode.FORBIDDEN_OPERATION, "a read-only operator's token may change nothing"
        )
    if m.table != JOBS_TABLE:
        raise Rejection(ErrorCode.UNKNOWN_TABLE, f"unknown table {m.table[:80]!r}")
    try:
        job_id = uuid.UUID(m.key)
    except ValueError:
        raise Rejection(ErrorCode.VALIDATION_ERROR, UNUSABLE_KEY) from None
    unknown = sorted(set(m.values) - set(JOB_COLUMNS) - set(DEPENDENCY_FIELDS))
    if unknown:
        raise Rejection(ErrorCode.UNKNOWN_COLUMN, f"unknown column(s): {', '.join(unknown)}")
    params: dict[str, Any] = {"id": job_id, "owner": caller.user, "operator": caller.operator}
    if m.op == "insert":
        values = params | _insert_values(job_id, m.values)
        values["after"], values["on_failure"] = upload.check(m)
        if rules is None:
            return values | {"submitted_by": "operator"}
        kind = values["kind"] or "default"
        priority = rules.admit(kind, m.values.get("payload"), values["priority"])
        return values | {"submitted_by": "client", "priority": priority}
    if m.op == "update":
        return params | _update_values(m.values)
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
    return params | _option_values(values)


def _option_values(values: dict[str, Any]) -> dict[str, Any]:
    """The job options a client may ask for; None leaves one to the kind's default."""
    try:
        check_job_options(values)
        run_at = values.get("run_at")
        return {
            name: values.get(name) for name in ("priority", "queue", "max_attempts", "unique_key")
        } | {"run_at": None if run_at is None else parse_timestamp(run_at)}
    except (TypeError, ValueError) as exc:
        raise Rejection(ErrorCode.VALIDATION_ERROR, f"bad value: {exc}") from None


def _payload(payload: Any) -> Jsonb:
    if payload is None:
        raise Rejection(ErrorCode.VALIDATION_ERROR, "the payload must not be null")
    try:
        text = dump_json(payload)
    except PayloadTooLarge as exc:
        raise Rejection(ErrorCode.PAYLOAD_TOO_LARGE, exc.message) from None
    except PayloadError as exc:
        raise Rejection(ErrorCode.VALIDATION_ERROR, exc.message) from None
    return Jsonb(payload, dumps=lambda _: text)  # the checked text, not a second dump


def _update_values(values: dict[str, Any]) -> dict[str, Any]:
    """An update cancels (``cancelled``: true) or answers (``answer``), one at a time."""
    _forbid_columns(values, CLIENT_UPDATE_COLUMNS)
    if set(values) == {"answer"}:
        try:
            return {"answer": dump_json(values["answer"], "answer")}
        except PayloadTooLarge as exc:
            raise Rejection(ErrorCode.PAYLOAD_TOO_LARGE, exc.message) from None
        except PayloadError as exc:
            raise Rejection(ErrorCode.VALIDATION_ERROR, exc.message) from None
    if values != {"cancelled": True}:
        raise Rejection(
            ErrorCode.FORBIDDEN_OPERATION,
            "an update either sets cancelled to true or gives an answer, one at a time",
        )
    return {}


async def _write(
    conn: AsyncConnection[Any], caller: Caller, m: Mutation, params: dict[str, Any]
) -> None:
    if m.op == "insert":
        await _insert(conn, params)
        return
    if "answer" in params:
        await _answer(conn, caller, m.key, params)
        return
    name = {"update": "cancel_job", "delete": "delete_job"}[m.op]
    row = await (await conn.execute(_q(name), params)).fetchone()
    if row is not None:
        return
    whose = "" if caller.operator else " of yours"
    raise Rejection(ErrorCode.NOT_FOUND, f"no job{whose} with id {m.key}")


async def _answer(
    conn: AsyncConnection[Any], caller: Caller, key: str, params: dict[str, Any]
) -> None:
    """Answer the job's question with the same query as server code (``answer``), as
    the owner (an operator: any job's); else say why not, revealing nothing of other
    users' jobs."""
    owner = None if caller.operator else caller.user
    answer = params | {"owner": owner, "max_length": MAX_ANSWER_LENGTH}
    # An operator's answer is recorded under the operator's name (job_events 'answered').
    who = {"operator": caller.user if caller.operator else ""}
    await conn.execute(query("set_operator", "operations.sql"), who)
    applied = await (await conn.execute(query("answer"), answer)).fetchone() is not None
    await conn.execute(query("set_operator", "operations.sql"), {"operator": ""})
    if applied:
        return
    row = await (await conn.execute(query("question_of"), params)).fetchone()
    if row is None or (owner is not None and row[0] != owner):
        whose = "" if owner is None else " of yours"
        raise Rejection(ErrorCode.NOT_FOUND, f"no job{whose} with id {key}")
    _, state, question, current = row
    try:
        check_answer(state, question, current, json.loads(params["answer"]))
    except QuestionClosed as exc:
        raise Rejection(ErrorCode.QUESTION_CLOSED, f"job {key}: {exc}") from None
    except ValueError as exc:
        raise Rejection(ErrorCode.VALIDATION_ERROR, f"job {key}: {exc}") from None
    raise Rejection(ErrorCode.QUESTION_CLOSED, f"job {key}: its question changed meanwhile")


async def _insert(conn: AsyncConnection[Any], params: dict[str, Any]) -> None:
    """Insert the job, or say why not: its id exists, or an unfinished job of the caller
    has its unique key. That job may finish in between: then the insert is tried again."""
    for _ in range(BATCH_ATTEMPTS):
        if await (await conn.execute(_q("insert_job"), params)).fetchone() is not None:
            if params["after"]:
                await dependencies.wait_for(conn, params)
            return
        existing = await (await conn.execute(_q("unfinished_with_key"), params)).fetchone()
        if existing is not None:
            raise Rejection(
                ErrorCode.DUPLICATE,
                f"job {existing[0]} has unique key {params['unique_key']!r} and is not "
                "finished; it stands for this one",
            )
        holder = await (await conn.execute(_q("job_owner"), params)).fetchone()
        if holder is not None:
            if holder[0] == params["owner"]:
                raise Rejection(ErrorCode.ALREADY_EXISTS, f"you have a job with id {params['id']}")
            raise Rejection(ErrorCode.VALIDATION_ERROR, UNUSABLE_KEY)
        if params["unique_key"] is None:
            break
    raise Rejection(ErrorCode.VALIDATION_ERROR, UNUSABLE_KEY)
