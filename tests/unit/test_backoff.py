"""The retry policy object every worker loop shares."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from errands.backoff import Backoff, Retries


@given(st.floats(0.001, 10), st.floats(0.001, 100), st.integers(1, 10_000))
def test_delays_double_up_to_the_cap_within_their_jitter(
    first: float, cap: float, attempt: int
) -> None:
    nominal = min(cap, first * 2.0 ** min(attempt - 1, 64))
    assert Backoff(first, cap, jitter="none").delay(attempt) == nominal
    assert nominal / 2 <= Backoff(first, cap, jitter="equal").delay(attempt) <= nominal
    assert 0 <= Backoff(first, cap, jitter="full").delay(attempt) <= nominal


@pytest.mark.parametrize("jitter", ["equal", "full"])
def test_jittered_delays_spread(jitter: str) -> None:
    policy = Backoff(1.0, 10.0, jitter=jitter)  # type: ignore[arg-type]
    assert len({policy.delay(3) for _ in range(20)}) > 1


def test_retries_count_failures_and_start_over_after_a_success() -> None:
    retries = Retries(Backoff(0.1, 1.0, jitter="none"))
    assert [retries.failed() for _ in range(5)] == [0.1, 0.2, 0.4, 0.8, 1.0]
    assert retries.failures == 5
    retries.succeeded()
    assert retries.failed() == 0.1
