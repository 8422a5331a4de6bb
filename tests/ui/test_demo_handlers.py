"""The demo's handlers, called directly with a recording context (unit tests)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import errands
from errands.demo.handlers import EXAMPLES, Primes, fails, primes, random_progress, registry
from errands.registry import JobContext


class Recorder(JobContext):
    """A real JobContext that also keeps every progress report."""

    def __init__(self) -> None:
        super().__init__("job", "demo", attempt=1, max_attempts=1)
        self.reports: list[tuple[float, str | None]] = []

    def progress(self, fraction: float, message: str | None = None) -> Any:
        self.reports.append((fraction, message))
        return super().progress(fraction, message)


def sieve(n: int) -> list[int]:
    """The primes up to n, found another way (Eratosthenes)."""
    flags = [True] * (n + 1)
    flags[0:2] = [False, False]
    for p in range(2, int(n**0.5) + 1):
        if flags[p]:
            flags[p * p :: p] = [False] * len(flags[p * p :: p])
    return [p for p, prime in enumerate(flags) if prime]


def test_every_example_names_a_registered_kind() -> None:
    assert sorted(EXAMPLES) == registry.kinds


@pytest.mark.parametrize("n", [2, 3, 4, 10, 97, 10_000, 123_457])
def test_primes_counts_like_a_sieve(n: int) -> None:
    ctx = Recorder()
    result = primes(ctx, Primes(n=n))
    expected = sieve(n)
    assert (result["primes"], result["largest"]) == (len(expected), expected[-1])
    fractions = [fraction for fraction, _ in ctx.reports]
    assert fractions == sorted(fractions)
    assert len(fractions) == n // 10_000


def test_primes_stops_when_cancelled() -> None:
    ctx = Recorder()
    ctx.request_cancel()
    with pytest.raises(errands.JobCancelled):
        primes(ctx, Primes(n=50_000))


@pytest.mark.parametrize("payload", [{"n": 1}, {"n": "10"}, {"n": True}, {"n": 2.5}, [10]])
def test_primes_says_what_is_wrong_with_a_payload(payload: Any) -> None:
    """Its payload type says: the worker parses the payload before the handler runs
    (and the service refuses a client's at the door, by the type's JSON Schema)."""
    with pytest.raises(errands.Permanent, match=r"does not match Primes: (n|the payload)"):
        registry.get("primes").parse_payload(payload)


def test_random_progress_climbs_to_one() -> None:
    ctx = Recorder()
    result = asyncio.run(random_progress(ctx, {"delay": 0}))
    fractions = [fraction for fraction, _ in ctx.reports]
    assert fractions == sorted(fractions)
    assert fractions[-1] == 1.0
    assert result["steps"] == len(fractions) >= 10  # steps are at most a tenth


def test_fails_fails_with_its_message() -> None:
    with pytest.raises(RuntimeError, match="the printer is on fire"):
        asyncio.run(fails(Recorder(), {"message": "the printer is on fire"}))
