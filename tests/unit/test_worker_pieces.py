"""Unit tests of the worker's pure pieces: backoff, ids, JSON checks, the registry."""

from __future__ import annotations

import asyncio
import itertools
import math
import time
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

import errands
from errands.exceptions import ErrandsError, HandlerNotFound, JobCancelled, PayloadError
from errands.ids import _Rising as Rising
from errands.ids import uuid7, uuid7_many
from errands.payloads import dump_json, printable
from errands.queries import parse_blocks, queries
from errands.registry import MAX_RETRY_DELAY, retry_delay


@given(st.floats(0.01, 10), st.integers(1, 40))
def test_retry_delay_stays_in_the_upper_half_of_the_doubling_window(
    base: float, attempt: int
) -> None:
    nominal = min(MAX_RETRY_DELAY, base * 2.0 ** (attempt - 1))
    assert nominal / 2 <= retry_delay(base, attempt) <= nominal


def test_retry_delays_are_jittered() -> None:
    assert len({retry_delay(1.0, 3) for _ in range(20)}) > 1


def test_uuid7_is_version_7_and_time_ordered() -> None:
    first = uuid7()
    time.sleep(0.002)
    second = uuid7()
    assert first.version == 7
    assert first.variant == uuid.RFC_4122
    assert first < second
    millis = first.int >> 80
    assert abs(millis - time.time() * 1000) < 60_000


def test_uuid7s_rise_within_one_millisecond() -> None:
    """Jobs asked for in one millisecond, or in one batch, list in the order asked."""
    singles = [uuid7() for _ in range(2_000)]  # many share a millisecond
    batch = uuid7_many(2_000)  # one millisecond, random bits drawn unsorted
    ids = singles + batch + [uuid7()]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert all(i.version == 7 and i.variant == uuid.RFC_4122 for i in ids)
    assert len({i.int >> 80 for i in batch}) == 1
    # Not guessable as "the one before plus one" (a step is 1 + 40 random bits).
    assert all(b.int - a.int > 1 for a, b in itertools.pairwise(ids))


def test_an_id_that_would_not_rise_steps_above_the_last() -> None:
    rising = Rising()
    top = 5 << 74 | (1 << 74) - 1  # millisecond 5, every random bit set
    first, second = rising.follow([top, top])
    assert first == top
    assert second >> 74 == 6  # the step carried into the milliseconds
    (earlier,) = rising.follow([4 << 74])  # the clock stepped back
    assert earlier > second
    rising.forget()  # as a forked child does
    assert rising.follow([4 << 74]) == [4 << 74]


@pytest.mark.parametrize("value", [{"x": object()}, {"x": math.nan}, {1, 2}, b"bytes"])
def test_dump_json_refuses_what_json_cannot_hold(value: object) -> None:
    with pytest.raises(PayloadError, match="payload is not JSON-serialisable"):
        dump_json(value)


def test_dump_json_is_compact() -> None:
    assert dump_json({"a": [1, "b", None, True]}) == '{"a":[1,"b",null,true]}'


def test_exceptions_default_to_their_docstring() -> None:
    assert "handler" in str(HandlerNotFound())
    assert isinstance(JobCancelled(), ErrandsError)
    assert str(PayloadError("custom")) == "custom"


def test_registry_registers_by_kind() -> None:
    registry = errands.Registry()

    @registry.job("a", timeout=3)
    async def a(ctx: errands.JobContext, payload: object) -> None:
        return None

    @registry.job("b")
    def b(ctx: errands.JobContext, payload: object) -> None:
        return None

    assert registry.kinds == ["a", "b"]
    assert "a" in registry
    assert registry.get("a").is_async
    assert registry.get("a").timeout == 3
    assert not registry.get("b").is_async
    with pytest.raises(HandlerNotFound, match="'c'"):
        registry.get("c")
    with pytest.raises(ValueError, match="already registered"):
        registry.job("a")(b)


def test_progress_is_clamped_and_taken_once() -> None:
    ctx = errands.JobContext(uuid7(), "k", 1, 3)
    ctx.progress(1.7, "over")
    assert ctx.take_progress() == (1.0, "over")
    assert ctx.take_progress() is None
    ctx.progress(-1)
    assert ctx.take_progress() == (0.0, None)


def test_progress_raises_once_cancelled_and_can_be_awaited() -> None:
    ctx = errands.JobContext(uuid7(), "k", 1, 3)

    async def handler() -> None:
        await ctx.progress(0.1)
        ctx.request_cancel()
        await ctx.progress(0.2)

    with pytest.raises(JobCancelled):
        asyncio.run(handler())
    assert ctx.cancelled


def test_query_blocks_parse_by_name() -> None:
    blocks = parse_blocks("-- name: one\nSELECT 1\n\n-- name: two\nSELECT 2;\n")
    assert blocks == {"one": "SELECT 1", "two": "SELECT 2;"}
    assert "claim_jobs" in queries()
    assert "errands_finish_and_claim" in queries()["claim_jobs"]


def test_worker_settings_reject_nonsense() -> None:
    with pytest.raises(ValueError, match="concurrency"):
        errands.WorkerSettings(concurrency=0)
    with pytest.raises(ValueError, match="heartbeat"):
        errands.WorkerSettings(lease=1, heartbeat_interval=2)


@pytest.mark.parametrize("value", [{"x": "nul \x00"}, ["\ud800"]])
def test_dump_json_refuses_what_jsonb_cannot_store(value: object) -> None:
    with pytest.raises(PayloadError):
        dump_json(value)


def test_dump_json_keeps_an_escaped_backslash_before_u0000() -> None:
    assert dump_json("\\u0000") == '"\\\\u0000"'


def test_printable_escapes_nul_and_lone_surrogates() -> None:
    assert printable("a\x00b\ud800") == "a\\x00b\\ud800"
