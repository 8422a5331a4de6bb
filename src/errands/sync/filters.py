"""Shape filters: a client's structured ``column op value`` conditions, checked against
the column whitelist and turned into SQL with the values as parameters.

Only the columns of :data:`errands.protocol.JOB_COLUMNS` may be named; identifiers are
quoted by :class:`psycopg.sql.Identifier` from that list, never taken from the request,
and each value is checked against the column's type before it reaches Postgres.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Callable, Sequence
from typing import Any, LiteralString

from psycopg import sql
from psycopg.types.json import Jsonb
from pydantic import TypeAdapter, ValidationError

from errands.protocol import (
    JOB_COLUMNS,
    MAX_JSON_DEPTH,
    ErrorCode,
    Filter,
    check_storable,
    json_depth_problem,
    parse_timestamp,
)
from errands.sync.errors import BadRequest

MAX_FILTERS = 20
MAX_IN_VALUES = 1000
MAX_TEXT = 10_000
INT32 = 2**31

COLUMN_TYPES: dict[str, LiteralString] = {
    "id": "uuid",
    "timestamp": "timestamptz",
    "kind": "text",
    "payload": "jsonb",
    "owner": "text",
    "state": "text",
    "cancelled": "boolean",
    "completed": "boolean",
    "progress": "real",
    "progress_message": "text",
    "result": "jsonb",
    "error": "jsonb",
    "attempts": "integer",
    "max_attempts": "integer",
    "run_at": "timestamptz",
    "priority": "integer",
    "queue": "text",
    "received_at": "timestamptz",
    "started_at": "timestamptz",
    "finished_at": "timestamptz",
    "unique_key": "text",
    "traceparent": "text",
    "waiting_for": "integer",
    "question": "jsonb",
    "answer": "jsonb",
}
"""The Postgres type of every column a shape delivers (the keys are JOB_COLUMNS)."""

_COMPARISONS: dict[str, LiteralString] = {
    "eq": "=",
    "ne": "<>",
    "lt": "<",
    "lte": "<=",
    "gt": ">",
    "gte": ">=",
}
_FILTERS = TypeAdapter(list[Filter])


def _uuid(value: Any) -> uuid.UUID:
    if not isinstance(value, str):
        raise TypeError("a UUID string")
    return uuid.UUID(value)


def check_text(value: Any) -> str:
    """A string Postgres can store (no NUL, no lone surrogate), of reasonable length."""
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise TypeError(f"a string of at most {MAX_TEXT} characters")
    return check_storable(value)


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError("true or false")
    return value


def _real(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TypeError("a number")
    return float(value)


def _integer(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not -INT32 <= value < INT32:
        raise TypeError("a 32-bit integer")
    return value


def _jsonb(value: Any) -> Jsonb:
    problem = json_depth_problem(value)
    if problem is not None:
        raise ValueError(problem)
    json.dumps(value, allow_nan=False)
    return Jsonb(value)


_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "uuid": _uuid,
    "timestamptz": parse_timestamp,
    "text": check_text,
    "boolean": _boolean,
    "real": _real,
    "integer": _integer,
    "jsonb": _jsonb,
}


def parse_filters(text: str | None) -> tuple[Filter, ...]:
    """The ``where`` query parameter: a JSON list of filters (absent: no filter)."""
    if text is None or not text.strip():
        return ()
    try:
        raw = json.loads(text)
    except RecursionError:
        raise BadRequest(
            f"where: arrays and objects are nested more than {MAX_JSON_DEPTH} deep",
            ErrorCode.VALIDATION_ERROR,
        ) from None
    except ValueError:
        raise BadRequest(
            'where must be a JSON list, e.g. [{"column": "state", "op": "eq", "value": "queued"}]',
            ErrorCode.INVALID_JSON,
        ) from None
    try:
        filters = _FILTERS.validate_python(raw)
    except ValidationError as exc:
        raise BadRequest(
            f"where is not a list of filters: {exc.errors()[0]['msg']}",
            ErrorCode.VALIDATION_ERROR,
        ) from None
    if len(filters) > MAX_FILTERS:
        raise BadRequest(f"at most {MAX_FILTERS} filters", ErrorCode.VALIDATION_ERROR)
    for f in filters:
        if f.column not in COLUMN_TYPES:
            raise BadRequest(
                f"unknown column {f.column[:80]!r}; columns: {', '.join(JOB_COLUMNS)}",
                ErrorCode.UNKNOWN_COLUMN,
            )
    # Before anything encodes them: a value nested too deep, or a string no encoder
    # takes, would fail far from here (as a 500) rather than as this 400.
    problem = json_depth_problem(raw, MAX_JSON_DEPTH + 2)  # the list and each filter
    if problem is not None:
        raise BadRequest(f"where: {problem}", ErrorCode.VALIDATION_ERROR)
    return tuple(filters)


def _convert(f: Filter, value: Any) -> Any:
    column_type = COLUMN_TYPES[f.column]
    try:
        return _CONVERTERS[column_type](value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise BadRequest(
            f"filter on {f.column}: {str(value)[:80]!r} is not {column_type} ({exc})",
            ErrorCode.VALIDATION_ERROR,
        ) from None


def _condition(f: Filter, name: str, params: dict[str, Any]) -> sql.Composable:
    column = sql.Identifier(f.column)
    column_type = sql.SQL(COLUMN_TYPES[f.column])
    if f.op in {"is_null", "not_null"}:
        if f.value is not None:
            raise BadRequest(f"{f.op} takes no value", ErrorCode.VALIDATION_ERROR)
        return sql.SQL("{} IS NULL" if f.op == "is_null" else "{} IS NOT NULL").format(column)
    if f.value is None:
        raise BadRequest(
            f"filter on {f.column}: {f.op} needs a value (use is_null / not_null for null)",
            ErrorCode.VALIDATION_ERROR,
        )
    placeholder = sql.Placeholder(name)
    if f.op == "in":
        if not isinstance(f.value, list) or not 0 < len(f.value) <= MAX_IN_VALUES:
            raise BadRequest(
                f"filter on {f.column}: in takes a list of 1 to {MAX_IN_VALUES} values",
                ErrorCode.VALIDATION_ERROR,
            )
        params[name] = [_convert(f, v) for v in f.value]
        return sql.SQL("{} = ANY({}::{}[])").format(column, placeholder, column_type)
    params[name] = _convert(f, f.value)
    operator = sql.SQL(_COMPARISONS[f.op])
    return sql.SQL("{} {} {}::{}").format(column, operator, placeholder, column_type)


def compile_filters(filters: Sequence[Filter]) -> tuple[sql.Composable, dict[str, Any]]:
    """The filters ANDed as SQL, and the parameters they name (``f0``, ``f1``, ...)."""
    params: dict[str, Any] = {}
    conditions = [_condition(f, f"f{i}", params) for i, f in enumerate(filters)]
    if not conditions:
        return sql.SQL("true"), params
    return sql.SQL(" AND ").join(conditions), params


def confined_keys(filters: Sequence[Filter]) -> frozenset[str] | None:
    """The only keys a shape with ``filters`` can ever hold (its ``id`` filters ``eq`` and
    ``in``, intersected), or None if any key may be in it. A row's id never changes, so
    a change to a row outside them is no news to its readers (not even a delete)."""
    confined: frozenset[str] | None = None
    for f in filters:
        if f.column != "id" or f.op not in {"eq", "in"}:
            continue
        try:
            ids = frozenset(str(uuid.UUID(v)) for v in (f.value if f.op == "in" else [f.value]))
        except (ValueError, TypeError, AttributeError):
            continue  # not a uuid: Postgres decides (the filter was checked before)
        confined = ids if confined is None else confined & ids
    return confined
