"""The sync protocol, version 1: defined once, imported by the service and the client.

Read path (shapes)::

    GET /v1/shapes/{table}?offset=-1&where=[...]            snapshot page(s)
    GET /v1/shapes/{table}?offset=O&where=[...]             changes since O, at once
    GET /v1/shapes/{table}?offset=O&where=[...]&live=true   long-poll (held <= ~20 s)
    GET /v1/shapes/{table}/stream?offset=O&where=[...]      the same as server-sent events

Every answer is a :class:`ShapeResponse`: messages to apply atomically, and the offset to
ask from next. A page of a snapshot ends without ``up-to-date``; the client asks again
from the returned offset until a response carries ``up-to-date``. A ``must-refetch``
message (HTTP 409) tells the client to drop its synced rows of the shape and start again
from ``-1``, keeping its outbox.

Write path (mutations)::

    POST /v1/mutations   MutationBatch -> MutationResponse

Errors are ``{"error": {"code": ..., "message": ...}}`` with a 4xx status for anything
the caller sent wrong; the codes are :class:`ErrorCode`.

Offsets are Postgres snapshots (``xmin:xmax:xip``) tagged with the database's
generation. They are opaque to applications, but the client decodes them for one thing:
to know when a shape has caught up with its own acknowledged mutation
(:meth:`Offset.covers`), so that its pending overlay can go without flicker.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

VERSION = 1
PREFIX = f"/v{VERSION}"
START = "-1"
"""The offset that asks for a shape's snapshot from the beginning."""

MAX_BATCH = 1000
"""Most mutations in one batch."""
MAX_PAYLOAD_BYTES = 256 * 1024
"""Largest JSON payload of one job."""
MAX_KIND_LENGTH = 200
"""Longest job kind, in characters."""
MAX_BODY_BYTES = 4 * 1024 * 1024
"""Largest request body."""
LIVE_HOLD_SECONDS = 20.0
"""Longest a live request is held before the server answers up-to-date."""

# -- what every client can read back ----------------------------------------------------
# The write path accepts only what the read path can serve to every client: the
# Python client, the page, any JSON library (see the README's Security section).

MAX_JSON_DEPTH = 64
"""Deepest nesting of arrays and objects in a payload, a result or a filter value
(``[]`` is 1 deep). JSON encoders and parsers have recursion limits of their own
(pydantic's is 255); a row must stay well inside all of them."""
EARLIEST = datetime(1, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
"""Timestamps lie between EARLIEST and LATEST in UTC: ISO 8601 with a four-digit year,
which Python, JavaScript and Postgres all read (Postgres would write other years as
``10000-...`` or ``... BC``)."""
UNSTORABLE_CHARACTERS = re.compile("[\x00\ud800-\udfff]")
"""NUL and lone surrogates: no Postgres text or jsonb value can hold them, and no UTF-8
encoder can send a lone surrogate."""
MAX_HEADER_BYTES = 8 * 1024
"""Longest request header line (name and value), as nginx's default buffers."""
MAX_HEADERS_BYTES = 32 * 1024
"""Most bytes of request headers in all (nginx: 4 buffers of 8 KiB)."""

JOBS_TABLE = "background_jobs"

JOB_COLUMNS: tuple[str, ...] = (
    "id",
    "timestamp",
    "kind",
    "payload",
    "owner",
    "state",
    "cancelled",
    "completed",
    "progress",
    "progress_message",
    "result",
    "error",
    "attempts",
    "max_attempts",
    "run_at",
    "priority",
    "queue",
    "received_at",
    "started_at",
    "finished_at",
    "unique_key",
    "traceparent",
    "waiting_for",
    "question",
    "answer",
)
"""The columns of a job row as shapes deliver it (values as JSON: uuid and timestamps
as strings, ISO 8601 with time zone). ``waiting_for`` is how many of the jobs it runs
after have not ended yet (docs/workflows.md)."""

TIMESTAMP_COLUMNS = ("timestamp", "run_at", "received_at", "started_at", "finished_at")
"""The columns that hold a timestamp (ISO 8601 with time zone on the wire)."""
JSON_COLUMNS = ("payload", "result", "error", "question", "answer")
"""The columns that hold any JSON."""

DEPENDENCY_FIELDS = ("after", "on_failure")
"""What a client's insert carries besides columns: the jobs the new job runs after (kept
as edges in ``job_dependencies``, not in the row) and what becomes of it if one of them
fails or is cancelled (:func:`check_dependencies`)."""
CLIENT_INSERT_COLUMNS = frozenset(
    {"id", "timestamp", "kind", "payload", "cancelled", "priority", "queue", "run_at"}
    | {"max_attempts", "unique_key", "traceparent", *DEPENDENCY_FIELDS}
)
"""The values a client may set when it inserts a job (the columns, and
:data:`DEPENDENCY_FIELDS`); the server sets the rest."""
MAX_PRIORITY = 1000
"""A client may ask for a priority from -MAX_PRIORITY to MAX_PRIORITY."""
MAX_ATTEMPTS = 100
"""The most attempts a client may ask for."""
MAX_NAME_LENGTH = 200
"""The longest queue name or unique key, in characters."""

# -- the rules a client applies before the service does ---------------------------------
# Lengths are in characters, that is Unicode code points (Python's len(), JavaScript's
# [...text].length), never UTF-16 units or bytes. rules() exports these tables as data
# for errands.js and the pages (python -m errands.protocol_export), and
# tests/conformance/ holds every client and the service to them.

LENGTH_UNIT = "code_point"
"""The unit of every text length in the rules."""

JOB_OPTION_RULES: dict[str, dict[str, Any]] = {
    "priority": {"type": "integer", "min": -MAX_PRIORITY, "max": MAX_PRIORITY},
    "max_attempts": {"type": "integer", "min": 1, "max": MAX_ATTEMPTS},
    "queue": {"type": "name", "min_length": 1, "max_length": MAX_NAME_LENGTH},
    "unique_key": {"type": "name", "min_length": 1, "max_length": MAX_NAME_LENGTH},
    "run_at": {"type": "timestamp"},
}
"""The options a client may set on a new job, and the values each takes: ``integer``
(whole numbers, not booleans, in ``min..max``), ``name`` (``min_length..max_length``
printable characters: what Python's ``str.isprintable`` accepts), ``timestamp``
(:func:`parse_timestamp`)."""

MAX_DEPENDENCIES = 100
"""The most jobs one job may run after, as a client submits it (server code is not
limited): an upload stays small, and a fan-in wider than this is a group's ``then``."""
DEPENDENCY_RULE: dict[str, Any] = {
    "after": {"type": "job_ids", "max_items": MAX_DEPENDENCIES},
    "on_failure": {"type": "choice", "choices": ["cancel", "run"], "default": "cancel"},
}
"""A new job's dependencies: ``after`` is a list of 0 to ``max_items`` job ids (UUIDs
written 8-4-4-4-12 in hex digits, any case; an id named twice counts once), and
``on_failure`` one of ``choices``. Whether each id is a job of the caller's, and that
the graph has no cycle, only the service can tell (``unknown_dependency``,
``dependency_cycle``)."""
_JOB_ID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")

KIND_RULE: dict[str, Any] = {"type": "text", "min_length": 1, "max_length": MAX_KIND_LENGTH}
"""A job's kind: 1 to MAX_KIND_LENGTH characters, none of them NUL or a lone surrogate."""


def check_kind(kind: Any) -> str:
    """``kind`` if it is a kind the service takes (:data:`KIND_RULE`); ``ValueError``
    saying why otherwise."""
    low, high = KIND_RULE["min_length"], KIND_RULE["max_length"]
    if (
        not isinstance(kind, str)
        or not low <= len(kind) <= high
        or UNSTORABLE_CHARACTERS.search(kind)
    ):
        raise ValueError(
            f"a job's kind must be a string of {low} to {high} characters, "
            "without NUL or lone surrogates"
        )
    return kind


def check_job_options(values: Mapping[str, Any]) -> None:
    """The rules of :data:`JOB_OPTION_RULES` for the options a client may set on a new
    job: ``ValueError`` naming the first bad one. Shared by the client, which refuses a
    bad value at once, and the sync service, which answers it with
    ``validation_error``."""
    for name, rule in JOB_OPTION_RULES.items():
        value = values.get(name)
        if value is not None:
            _check_option(name, rule, value)


def check_dependencies(after: Any, on_failure: Any = None) -> tuple[list[str], str]:
    """``after`` as an insert carries it (lower-case ids, each once, in the order named)
    and ``on_failure`` (None: the default), if they follow :data:`DEPENDENCY_RULE`;
    ``ValueError`` saying why otherwise. Shared by the clients and the service."""
    rule, choices = DEPENDENCY_RULE["after"], DEPENDENCY_RULE["on_failure"]
    if on_failure is None:
        on_failure = choices["default"]
    if on_failure not in choices["choices"]:
        raise ValueError(f"on_failure must be one of {choices['choices']}, not {on_failure!r:.80}")
    if after is None:
        return [], on_failure
    if not isinstance(after, list | tuple) or len(after) > rule["max_items"]:
        raise ValueError(f"after must be a list of at most {rule['max_items']} job ids")
    ids: dict[str, None] = {}
    for job_id in after:
        if not isinstance(job_id, str) or not _JOB_ID.fullmatch(job_id):
            raise ValueError(f"after holds {job_id!r:.80}, which is not a job id (a UUID)")
        ids[job_id.lower()] = None
    return list(ids), on_failure


def _check_option(name: str, rule: Mapping[str, Any], value: Any) -> None:
    if rule["type"] == "integer":
        low, high = rule["min"], rule["max"]
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise ValueError(f"{name} must be a whole number from {low} to {high}, not {value!r}")
    elif rule["type"] == "name":
        low, high = rule["min_length"], rule["max_length"]
        if not isinstance(value, str) or not low <= len(value) <= high or not value.isprintable():
            raise ValueError(
                f"{name} must be {low} to {high} printable characters, not {value!r:.80}"
            )
    else:
        try:
            parse_timestamp(value)
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"{name} must be an ISO 8601 timestamp ({exc}), not {value!r:.80}"
            ) from None


CLIENT_UPDATE_COLUMNS = frozenset({"cancelled", "answer"})
"""The columns a client may update, one per update: ``cancelled`` only to true, and
``answer`` only as :func:`check_answer` allows."""

MAX_ANSWER_LENGTH = 10_000
"""The longest answer, in characters, to a question asked without choices."""
QUESTION_ANSWER_RULE: dict[str, Any] = {"type": "text", "max_length": MAX_ANSWER_LENGTH}
"""What answers a question (``ctx.ask``) that is pending (asked, not answered, not
timed out: the question has no ``timed_out``): one of its ``choices``, equal as JSON
(a boolean is never a number); without choices, a text of at most ``max_length``
characters. The service applies the same rule as it writes the answer (SQL
``errands_answers``, given ``max_length``)."""


ANSWERABLE_STATES = ("queued", "running")
"""The states of a job whose question can be answered."""


class QuestionClosed(ValueError):
    """The job has no question waiting for an answer: answered already, timed out, or
    never asked (or the job has ended)."""


def question_pending(question: Any, answer: Any) -> bool:
    """Whether ``question`` (a job's ``question`` column, as synced) waits for an
    answer: asked, not answered (``answer`` is None) and not timed out."""
    return isinstance(question, dict) and answer is None and "timed_out" not in question


def check_answer(state: Any, question: Any, answer: Any, value: Any) -> Any:
    """``value`` if it answers the job's pending ``question`` (:data:`QUESTION_ANSWER_RULE`;
    ``state``, ``question`` and ``answer`` are the job's columns); :class:`QuestionClosed`
    if none is pending, ``ValueError`` saying why for another wrong value. The client's
    check before it records an answer, and the service's explanation of a refusal (it
    checks the same in SQL as it writes)."""
    if state not in ANSWERABLE_STATES or not question_pending(question, answer):
        raise QuestionClosed(
            "the job has no question waiting for an answer (answered already, timed out, "
            "or never asked)"
        )
    if value is None:
        raise ValueError("an answer is not null")
    choices = question.get("choices")
    if isinstance(choices, list):
        if not any(same_json(value, choice) for choice in choices):
            listed = ", ".join(repr(c) for c in choices)
            raise ValueError(f"{value!r:.80} is not one of the question's choices: {listed:.300}")
        return value
    longest = QUESTION_ANSWER_RULE["max_length"]
    if not isinstance(value, str) or len(value) > longest or UNSTORABLE_CHARACTERS.search(value):
        raise ValueError(
            f"the question has no choices: its answer is a text of at most {longest} "
            "characters, without NUL or lone surrogates"
        )
    return value


def same_json(a: Any, b: Any) -> bool:
    """Whether two JSON values are equal as JSON (Postgres ``jsonb =``): numbers by
    value, and a boolean never equal to a number (unlike Python's ``True == 1``)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_json(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


class ErrorCode(StrEnum):
    """Machine-readable error and rejection codes."""

    BAD_REQUEST = "bad_request"
    INVALID_JSON = "invalid_json"
    VALIDATION_ERROR = "validation_error"
    UNKNOWN_TABLE = "unknown_table"
    UNKNOWN_COLUMN = "unknown_column"
    BAD_OFFSET = "bad_offset"
    MUST_REFETCH = "must_refetch"
    UNAUTHORIZED = "unauthorized"
    TOKEN_EXPIRED = "token_expired"  # noqa: S105 -- an error code, not a secret
    FORBIDDEN = "forbidden"
    FORBIDDEN_COLUMN = "forbidden_column"
    FORBIDDEN_OPERATION = "forbidden_operation"
    OPERATOR_REQUIRED = "operator_required"
    NOT_FOUND = "not_found"
    SEARCH_TOO_BROAD = "search_too_broad"
    ALREADY_EXISTS = "already_exists"
    UNKNOWN_DEPENDENCY = "unknown_dependency"
    """A job the insert runs after is not one of the caller's (whether it is nobody's
    or another user's is not said), or comes later in the same upload."""
    DEPENDENCY_CYCLE = "dependency_cycle"
    """The jobs of an upload run after one another in a circle (or one after itself)."""
    KIND_NOT_ALLOWED = "kind_not_allowed"
    """Clients may not submit this kind: it is not declared for clients."""
    QUOTA_EXCEEDED = "quota_exceeded"
    """The caller has its quota of queued jobs; retry after Retry-After seconds."""
    TOO_MANY_REQUESTS = "too_many_requests"
    """The caller has its share of plain reads or mutation batches in flight."""
    DUPLICATE = "duplicate"
    """An unfinished job of the same owner has the insert's unique key; the message
    names it, and the client shows it as it syncs."""
    PAYLOAD_TOO_LARGE = "payload_too_large"
    HEADERS_TOO_LARGE = "headers_too_large"
    REQUEST_TIMEOUT = "request_timeout"
    MUTATION_ID_REUSED = "mutation_id_reused"
    TOO_MANY_LIVE_READERS = "too_many_live_readers"
    TOO_MANY_SHAPES = "too_many_shapes"
    UNSERVABLE_ROW = "unservable_row"
    FORBIDDEN_ORIGIN = "forbidden_origin"
    NOT_ALLOWED = "method_not_allowed"
    UNAVAILABLE = "unavailable"
    DATABASE_UNAVAILABLE = "database_unavailable"
    QUESTION_CLOSED = "question_closed"
    """An answer to a job that has no question waiting for one: answered already (by
    another replica of the owner, or an operator), timed out, or never asked."""
    INTERNAL = "internal_error"


ANSWER_RULES: tuple[dict[str, Any], ...] = (
    {"status": 401, "action": "unauthorized"},
    {"code": ErrorCode.MUTATION_ID_REUSED.value, "action": "refused"},
    {"status": 409, "action": "must_refetch"},
    {"code": ErrorCode.BAD_OFFSET.value, "action": "must_refetch"},
    {"status": 400, "action": "refused"},
    {"status": 413, "action": "refused"},
    {"status": 422, "action": "refused"},
)
"""How a client reads an error answer: the first rule whose ``status`` or ``code``
matches says what to do. ``unauthorized``: stop (or ask for a fresh token);
``refused``: the request itself is wrong, so its mutations are rejected, never resent;
``must_refetch``: drop the shape's rows and read it again from START, keeping the
outbox. No rule matches: ``retry`` later (a 5xx, a proxy's 404...): nothing is
rejected for an answer that may pass."""


def client_action(status: int, code: str | None) -> str:
    """What a client does with an error answer (:data:`ANSWER_RULES`)."""
    for rule in ANSWER_RULES:
        if rule.get("status") == status or (code is not None and rule.get("code") == code):
            return str(rule["action"])
    return "retry"


def parse_timestamp(value: Any) -> datetime:
    """An ISO 8601 timestamp every client can read back, in UTC; one without a time
    zone is taken as UTC. ``ValueError`` (``TypeError`` for a non-string) otherwise."""
    if not isinstance(value, str):
        raise TypeError("an ISO 8601 timestamp string")
    parsed = datetime.fromisoformat(value)
    try:
        return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    except OverflowError:
        raise ValueError(f"a timestamp between {EARLIEST} and {LATEST} in UTC") from None


def check_storable(value: str) -> str:
    """``value`` if it has no NUL and no lone surrogate; ``ValueError`` otherwise."""
    if UNSTORABLE_CHARACTERS.search(value):
        raise ValueError("text must not hold NUL (\\u0000) or a lone surrogate")
    return value


def json_depth_problem(value: Any, limit: int = MAX_JSON_DEPTH) -> str | None:
    """Why ``value`` (as :func:`json.loads` gives it) is nested too deep or holds a
    string no client can store; None if it is fine. Walked without recursion, so any
    depth is safe to ask about."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if UNSTORABLE_CHARACTERS.search(item):
                return "a string holds a NUL character (\\u0000) or a lone surrogate"
        elif isinstance(item, dict | list | tuple):
            if depth >= limit:
                return f"arrays and objects are nested more than {limit} deep"
            if isinstance(item, dict):
                for key in item:
                    if not isinstance(key, str) or UNSTORABLE_CHARACTERS.search(key):
                        return "an object key is not a string without NUL or lone surrogates"
                stack.extend((v, depth + 1) for v in item.values())
            else:
                stack.extend((v, depth + 1) for v in item)
    return None


def row_problem(row: Any) -> str | None:
    """Why a job row (as a shape delivers it) cannot be read by every client; None if
    it can. A row the write path accepted always can; one written by SQL may not."""
    if not isinstance(row, dict):
        return "the row is not a JSON object"
    for column in TIMESTAMP_COLUMNS:
        value = row.get(column)
        if value is None and column != "timestamp":
            continue  # only the timestamp is never null
        unreadable = f"{column} is not an ISO 8601 timestamp of years 1 to 9999: {value!r:.80}"
        if not isinstance(value, str):
            return unreadable
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return unreadable
        if parsed.tzinfo is None:
            return f"{column} has no time zone: {value!r:.80}"
    for column in JSON_COLUMNS:
        problem = json_depth_problem(row.get(column))
        if problem:
            return f"{column}: {problem}"
    return None


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ErrorDetail(_Model):
    """What went wrong, for programs (``code``) and people (``message``)."""

    code: ErrorCode
    message: str


class ErrorResponse(_Model):
    """The body of every 4xx/5xx answer."""

    error: ErrorDetail


# -- shapes -----------------------------------------------------------------------------

FilterOp = Literal["eq", "ne", "lt", "lte", "gt", "gte", "in", "is_null", "not_null"]


class Filter(_Model):
    """One condition of a shape: ``column op value``. A shape's filters are ANDed."""

    column: str
    op: FilterOp = "eq"
    value: Any = None


class UpsertMessage(_Model):
    """The full current state of a row in the shape."""

    type: Literal["upsert"] = "upsert"
    key: str
    row: dict[str, Any]


class DeleteMessage(_Model):
    """A row left the shape: deleted, or changed so that it no longer matches.

    With ``error``, the row is still in the shape but its current state cannot be sent
    as JSON every client reads (it was written by SQL around the write path's checks,
    say): the client drops its copy, and warns with ``error`` instead of failing the
    whole sync. Every other row keeps flowing."""

    type: Literal["delete"] = "delete"
    key: str
    error: ErrorDetail | None = None


class ControlMessage(_Model):
    """``up-to-date``: the client has everything up to the response's offset.
    ``must-refetch``: drop the shape's rows and start again from offset -1."""

    type: Literal["up-to-date", "must-refetch"]


Message = Annotated[UpsertMessage | DeleteMessage | ControlMessage, Field(discriminator="type")]


class ShapeResponse(_Model):
    """One answer on the read path; apply ``messages`` atomically, then ask from
    ``offset``."""

    messages: list[Message]
    offset: str

    @model_validator(mode="before")
    @classmethod
    def _skip_unservable_rows(cls, data: Any) -> Any:
        """An upsert of a row some client could not read becomes a delete carrying an
        ``unservable_row`` error; both sides apply this, so neither fails on it."""
        if not isinstance(data, dict) or not isinstance(data.get("messages"), list):
            return data
        messages = [_servable(m) for m in data["messages"]]
        return {**data, "messages": messages}

    @property
    def up_to_date(self) -> bool:
        """Whether this answer brings the client up to date."""
        return any(m.type == "up-to-date" for m in self.messages)

    @property
    def must_refetch(self) -> bool:
        """Whether the client must drop the shape's rows and start from -1."""
        return any(m.type == "must-refetch" for m in self.messages)


def _servable(message: Any) -> Any:
    key: Any
    row: Any
    if isinstance(message, UpsertMessage):
        key, row = message.key, message.row
    elif isinstance(message, dict) and message.get("type") == "upsert":
        key, row = message.get("key"), message.get("row")
    else:
        return message
    problem = row_problem(row)
    if problem is None or not isinstance(key, str):
        return message
    detail = ErrorDetail(code=ErrorCode.UNSERVABLE_ROW, message=f"row {key}: {problem}")
    return DeleteMessage(key=key, error=detail)


# -- mutations --------------------------------------------------------------------------


class Mutation(_Model):
    """One local change, uploaded. ``id`` is generated by the client once and reused on
    every retry: the server applies a mutation id at most once."""

    id: Annotated[str, Field(min_length=1, max_length=100), AfterValidator(check_storable)]
    table: str
    op: Literal["insert", "update", "delete"]
    key: str
    values: dict[str, Any] = Field(default_factory=dict)


class MutationBatch(_Model):
    """Mutations applied in one transaction, in order."""

    mutations: list[Mutation] = Field(min_length=1, max_length=MAX_BATCH)


class MutationResult(_Model):
    """What became of one mutation. ``replayed`` is true when the id had been applied by
    an earlier request (a retry): nothing was applied twice."""

    id: str
    status: Literal["applied", "rejected"]
    replayed: bool = False
    code: ErrorCode | None = None
    message: str | None = None


class MutationResponse(_Model):
    """Per-mutation results, and the batch's transaction id: the effects are visible in
    any shape whose offset :meth:`Offset.covers` it."""

    results: list[MutationResult]
    txid: int
    offset: str


class WhoAmI(_Model):
    """The caller, as the service sees the token."""

    user: str
    operator: bool
    generation: str


# -- offsets ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Offset:
    """A position in a shape's history: a Postgres snapshot of one database generation.

    Encoded as ``GENERATION_XMIN_XMAX_XIP1.XIP2...`` (``XIP`` empty when no transaction
    was in progress), optionally followed by ``~KEY`` while a snapshot is paged: the
    last key already sent.
    """

    generation: str
    xmin: int
    xmax: int
    xip: tuple[int, ...] = ()
    after_key: str | None = None

    def encode(self) -> str:
        """The offset as it travels on the wire."""
        xip = ".".join(str(x) for x in self.xip)
        text = f"{self.generation}_{self.xmin}_{self.xmax}_{xip}"
        return f"{text}~{self.after_key}" if self.after_key is not None else text

    @classmethod
    def decode(cls, text: str) -> Offset:
        """Parse an offset; ``ValueError`` if it is not one."""
        body, sep, after_key = text.partition("~")
        parts = body.split("_")
        if len(parts) != 4 or not parts[0].isalnum():
            raise ValueError(f"not an offset: {text[:80]!r}")
        generation, xmin, xmax, xip = parts
        try:
            xips = tuple(int(x) for x in xip.split(".")) if xip else ()
            offset = cls(generation, int(xmin), int(xmax), xips, after_key if sep else None)
        except ValueError:
            raise ValueError(f"not an offset: {text[:80]!r}") from None
        if not 0 < offset.xmin <= offset.xmax or any(
            not offset.xmin <= x < offset.xmax for x in offset.xips_sorted
        ):
            raise ValueError(f"not an offset: {text[:80]!r}")
        return offset

    @property
    def xips_sorted(self) -> tuple[int, ...]:
        """The in-progress transaction ids, sorted."""
        return tuple(sorted(self.xip))

    def covers(self, txid: int) -> bool:
        """Whether the effects of transaction ``txid`` are visible at this offset."""
        return txid < self.xmin or (txid < self.xmax and txid not in self.xip)


# -- the rules as data ------------------------------------------------------------------


def rules() -> dict[str, Any]:
    """Every rule a client applies before the service does, as JSON-ready data: what
    errands.js and the pages read (``src/errands/web/rules.js``, generated from this by
    ``python -m errands.protocol_export``) and what tests/conformance/ holds every
    client and the service to. Add a limit or an error code above, then regenerate."""
    return {
        "version": VERSION,
        "prefix": PREFIX,
        "start": START,
        "jobs_table": JOBS_TABLE,
        "length_unit": LENGTH_UNIT,
        "max_batch": MAX_BATCH,
        "max_body_bytes": MAX_BODY_BYTES,
        "max_payload_bytes": MAX_PAYLOAD_BYTES,
        "max_json_depth": MAX_JSON_DEPTH,
        "live_hold_seconds": LIVE_HOLD_SECONDS,
        "earliest": EARLIEST.isoformat(),
        "latest": LATEST.isoformat(),
        "unstorable_text": ["NUL", "lone surrogate"],
        "kind": KIND_RULE,
        "job_options": JOB_OPTION_RULES,
        "dependencies": DEPENDENCY_RULE,
        "job_columns": list(JOB_COLUMNS),
        "timestamp_columns": list(TIMESTAMP_COLUMNS),
        "json_columns": list(JSON_COLUMNS),
        "client_insert_columns": sorted(CLIENT_INSERT_COLUMNS),
        "client_update_columns": sorted(CLIENT_UPDATE_COLUMNS),
        "question_answer": QUESTION_ANSWER_RULE,
        "filter_ops": list(get_args(FilterOp)),
        "error_codes": {code.name.lower(): code.value for code in ErrorCode},
        "answers": list(ANSWER_RULES),
    }
