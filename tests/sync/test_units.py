"""Unit tests of the service's pure pieces: filters, offsets, tokens (no I/O)."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st
from psycopg import sql

from errands.protocol import JOB_COLUMNS, Filter, Offset
from errands.sync.auth import Authenticator, Caller, make_token, verify_token
from errands.sync.errors import BadRequest, MustRefetch, NotFound, Unauthorized
from errands.sync.filters import COLUMN_TYPES, compile_filters, parse_filters
from errands.sync.shapes import (
    Position,
    Shape,
    check_offset,
    parse_offset,
    pg_snapshot,
    snapshot_offset,
)

SECRET = "unit-secret-0123456789abcdef0123456789"


def test_every_delivered_column_has_a_type() -> None:
    assert tuple(COLUMN_TYPES) == JOB_COLUMNS


def test_filters_become_sql_with_parameters() -> None:
    filters = parse_filters(
        '[{"column": "state", "op": "in", "value": ["queued", "running"]},'
        ' {"column": "progress", "op": "gte", "value": 0.5},'
        ' {"column": "result", "op": "is_null"}]'
    )
    condition, params = compile_filters(filters)
    text = condition.as_string(None)
    assert text == (
        '"state" = ANY(%(f0)s::text[]) AND "progress" >= %(f1)s::real AND "result" IS NULL'
    )
    assert params == {"f0": ["queued", "running"], "f1": 0.5}


def test_no_filter_is_true() -> None:
    condition, params = compile_filters(())
    assert condition == sql.SQL("true")
    assert params == {}


@given(st.text(max_size=40))
def test_a_column_name_never_reaches_sql_unless_whitelisted(column: str) -> None:
    where = Filter(column=column, value="x").model_dump_json()
    if column in COLUMN_TYPES:
        assert parse_filters(f"[{where}]")[0].column == column
    else:
        with pytest.raises(BadRequest) as caught:
            parse_filters(f"[{where}]")
        assert caught.value.code == "unknown_column"


def test_shapes_with_equal_filters_share_a_key() -> None:
    a = Shape("background_jobs", (Filter(column="state", value="queued"),), "alice")
    b = Shape("background_jobs", (Filter(column="state", op="eq", value="queued"),), "alice")
    c = Shape("background_jobs", (Filter(column="state", value="queued"),), "bob")
    assert a.key == b.key
    assert a.key != c.key
    with pytest.raises(NotFound):
        Shape("users")


offsets = st.builds(
    lambda gen, xmin, span, picks: Offset(
        gen, xmin, xmin + span, tuple(sorted({xmin + p % span for p in picks})) if span else ()
    ),
    st.text("abcdef0123456789", min_size=1, max_size=32),
    st.integers(1, 2**40),
    st.integers(0, 1000),
    st.lists(st.integers(0, 10**6), max_size=5),
)


@given(offsets)
def test_offsets_round_trip_through_postgres_text(offset: Offset) -> None:
    assert snapshot_offset(offset.generation, pg_snapshot(offset)) == offset
    assert parse_offset(offset.encode()) == offset


def test_offset_checks() -> None:
    current = Offset("gen", 100, 110, (105,))
    position = Position("gen", 50, current)
    check_offset(Offset("gen", 60, 70), position)
    check_offset(Offset("gen", 40, 70), position)  # it sees every pruned transaction
    stale_offsets = (
        Offset("old", 60, 70),
        Offset("gen", 40, 49),
        Offset("gen", 40, 70, (45,)),
        Offset("gen", 100, 120),
    )
    for stale in stale_offsets:
        with pytest.raises(MustRefetch):
            check_offset(stale, position)
    assert parse_offset("-1") is None
    for garbage in ("", "1", "gen_1_2_3", "gen_2_1_", "gen_1_2_~x"):
        with pytest.raises(BadRequest):
            parse_offset(garbage)


def test_tokens() -> None:
    assert verify_token(SECRET, make_token(SECRET, "ann")) == Caller("ann")
    assert verify_token(SECRET, make_token(SECRET, "op", operator=True)).operator
    with pytest.raises(Unauthorized) as expired:
        verify_token(SECRET, make_token(SECRET, "ann", expires_in=-1))
    assert expired.value.code == "token_expired"
    with pytest.raises(Unauthorized):
        verify_token("another" + SECRET, make_token(SECRET, "ann"))
    with pytest.raises(ValueError, match="user name"):
        make_token(SECRET, "")


def test_insecure_mode_has_one_user_and_needs_no_token() -> None:
    assert Authenticator(None, insecure=True).caller(None) == Caller("local")
    with pytest.raises(Unauthorized):
        Authenticator(SECRET).caller(None)
    with pytest.raises(ValueError, match="secret"):
        Authenticator(None)


def test_a_remembered_token_still_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    auth = Authenticator(SECRET)
    token = make_token(SECRET, "ann", expires_in=60)
    assert auth.caller(token) == Caller("ann")
    assert auth.caller(token) == Caller("ann")  # from memory
    later = time.time() + 120
    monkeypatch.setattr("errands.sync.auth.time.time", lambda: later)
    with pytest.raises(Unauthorized) as expired:
        auth.caller(token)
    assert expired.value.code == "token_expired"
