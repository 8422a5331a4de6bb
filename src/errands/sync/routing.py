"""Routing a changed row to the shapes it concerns, in memory (docs/sync.md, "Fan-out").

A shape is a permission (the owner it may see, or every owner for an operator) ANDed
with the client's filters. :func:`compile_matcher` turns the filters into a Python
predicate that decides exactly what Postgres would decide for the same row: values are
compared as the column's Postgres type compares them (``real`` rounded to 32 bits,
``uuid`` by its bytes, ``timestamptz`` as instants) and a NULL never compares true.
Where Python cannot promise Postgres's answer -- ``jsonb`` values, ordering text under
the database's collation, values Python cannot represent -- the matcher raises
:class:`Undecidable` and the service asks Postgres instead (the per-shape read).

:class:`ShapeIndex` finds the shapes a change concerns from the row's owner alone: a
user's shapes, plus the operators' shapes, which see every owner. It does not index the
filters' own equalities: a change must also reach the shapes whose filter the row has
just stopped matching (they get a delete), and the change log holds the new version of
a row only, not the values it had before.
"""

from __future__ import annotations

import re
import struct
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

from errands.protocol import DeleteMessage, Filter, Message, UpsertMessage, parse_timestamp
from errands.sync.changes import Change
from errands.sync.filters import COLUMN_TYPES

Row = dict[str, Any]
Matcher = Callable[[Row], bool]


class Undecidable(Exception):
    """Python cannot promise Postgres's answer for this filter or value."""


def _real(value: Any) -> float:
    # Postgres stores ``real`` as an IEEE 32-bit float; a filter value is cast to it.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Undecidable("not a finite number")  # e.g. "NaN" as JSON text
    try:
        rounded: float = struct.unpack("f", struct.pack("f", value))[0]
    except OverflowError:
        raise Undecidable("out of range for real") from None
    if rounded == 0 and value != 0:
        raise Undecidable("underflows real")  # Postgres refuses it
    return rounded


def _timestamp(value: Any) -> datetime:
    if not isinstance(value, str) or _LONG_FRACTION.search(value):
        raise Undecidable("not a timestamp Python represents exactly")
    try:
        return parse_timestamp(value)
    except ValueError:  # 'infinity', years past 9999, BC dates
        raise Undecidable("not a timestamp Python represents") from None


def _typed(expected: type) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if type(value) is not expected:
            raise Undecidable(f"not a {expected.__name__}")
        return value

    return check


def _uuid(value: Any) -> uuid.UUID:
    # Postgres orders uuids by their 16 bytes, as Python orders them by their integer.
    if not isinstance(value, str):
        raise Undecidable("not a uuid")
    return uuid.UUID(value)


_LONG_FRACTION = re.compile(r"\.\d{7,}")
_NORMALISE: dict[str, Callable[[Any], Any]] = {
    "uuid": _uuid,
    "timestamptz": _timestamp,
    "text": _typed(str),
    "boolean": _typed(bool),
    "integer": _typed(int),
    "real": _real,
}
_ORDERED = {"lt", "lte", "gt", "gte"}
_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "eq": lambda a, b: bool(a == b),
    "ne": lambda a, b: bool(a != b),
    "lt": lambda a, b: bool(a < b),
    "lte": lambda a, b: bool(a <= b),
    "gt": lambda a, b: bool(a > b),
    "gte": lambda a, b: bool(a >= b),
}


def _undecidable(reason: str) -> Matcher:
    def never(row: Row) -> bool:
        raise Undecidable(reason)

    return never


def _condition(f: Filter) -> Matcher:
    column, column_type = f.column, COLUMN_TYPES[f.column]
    if f.op in {"is_null", "not_null"} and column_type != "jsonb":
        null = f.op == "is_null"
        return lambda row: (row[column] is None) is null
    if column_type not in _NORMALISE:
        # A JSON null in the row is both SQL NULL and jsonb 'null'; jsonb compares by
        # its own rules.
        return _undecidable(f"{column_type} filters are decided by Postgres")
    if column_type == "text" and f.op in _ORDERED:
        return _undecidable("text order follows the database's collation")
    normalise = _NORMALISE[column_type]
    try:
        wanted = [normalise(v) for v in f.value] if f.op == "in" else normalise(f.value)
    except Undecidable as why:
        return _undecidable(str(why))

    def value(row: Row) -> Any:
        found = row[column]
        return None if found is None else normalise(found)

    if f.op == "in":
        choices = set(wanted)
        return lambda row: (v := value(row)) is not None and v in choices
    compare = _COMPARE[f.op]
    return lambda row: (v := value(row)) is not None and compare(v, wanted)


def compile_matcher(filters: Sequence[Filter]) -> Matcher:
    """A predicate deciding, like the shape's SQL, whether a row matches ``filters``
    (already validated by :func:`errands.sync.filters.compile_filters`). It raises
    :class:`Undecidable` where only Postgres can decide."""
    conditions = [_condition(f) for f in filters]
    return lambda row: all(condition(row) for condition in conditions)


class ShapeIndex:
    """The shapes that have live readers, by the owner whose rows they may see."""

    def __init__(self) -> None:
        self._by_owner: dict[str, set[str]] = {}
        self._everyone: set[str] = set()  # operators' shapes

    def add(self, key: str, owner: str | None) -> None:
        """Index shape ``key`` (permission ``owner``; None sees every owner)."""
        if owner is None:
            self._everyone.add(key)
        else:
            self._by_owner.setdefault(owner, set()).add(key)

    def remove(self, key: str, owner: str | None) -> None:
        """Forget shape ``key``."""
        if owner is None:
            self._everyone.discard(key)
            return
        keys = self._by_owner.get(owner)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_owner[owner]

    def route(self, changes: Iterable[Change]) -> dict[str, list[Change]]:
        """The changes each indexed shape may hear of (those of owners it may see);
        O(changes x shapes concerned)."""
        routed: dict[str, list[Change]] = {}
        for change in changes:
            keys = set(self._everyone)
            for owner in change.owners:
                if owner is not None:
                    keys.update(self._by_owner.get(owner, ()))
            for key in keys:
                routed.setdefault(key, []).append(change)
        return routed


def messages(
    owner: str | None,
    matcher: Matcher,
    changes: Iterable[Change],
    confined: frozenset[str] | None = None,
) -> list[Message]:
    """What a reader of the shape (permission ``owner``, filters ``matcher``, the keys it
    is ``confined`` to) gets for ``changes``: the row if it matches, a delete if it was
    possibly in the shape (it changed or went, and the reader may have seen a state of
    it). Raises :class:`Undecidable` where only Postgres can decide."""
    found: list[Message] = []
    for change in changes:
        if confined is not None and change.key not in confined:
            continue
        row = change.row
        if row is not None and (owner is None or row["owner"] == owner):
            if matcher(row):
                found.append(UpsertMessage(key=change.key, row=row))
            else:
                found.append(DeleteMessage(key=change.key))
        elif owner is None or owner in change.owners:
            found.append(DeleteMessage(key=change.key))
    return found
