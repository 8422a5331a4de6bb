"""How long to wait before trying again: one policy object for every retry loop (the
worker's, the service's listener, the Python client's reconnection; errands.js has its
own twin, ``Backoff`` in web/model.js)."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

# 2**64 times any sensible first delay is far past every cap: no need to go higher
# (and 2.0**10_000 would overflow).
_MAX_DOUBLINGS = 64


@dataclass(frozen=True)
class Backoff:
    """Delays that double from ``first`` up to ``cap`` seconds, jittered.

    ``jitter`` spreads the retries of many processes apart: ``"equal"`` draws from the
    upper half of the nominal delay (never sooner than half of it), ``"full"`` from all
    of it, ``"none"`` keeps it exact. ``rng`` draws the jitter (0 to 1; tests fix it).
    """

    first: float
    cap: float
    jitter: Literal["none", "equal", "full"] = "equal"
    rng: Callable[[], float] = field(default=random.random, compare=False, repr=False)

    def delay(self, attempt: int) -> float:
        """The wait before retry number ``attempt`` (1 for the first retry)."""
        nominal = min(self.cap, self.first * 2.0 ** min(max(attempt - 1, 0), _MAX_DOUBLINGS))
        if self.jitter == "equal":
            return nominal / 2 + self.rng() * nominal / 2
        if self.jitter == "full":
            return self.rng() * nominal
        return nominal


class Retries:
    """The failures of one repeated action so far, and the wait after each."""

    def __init__(self, policy: Backoff) -> None:
        self.policy = policy
        self.failures = 0

    def failed(self) -> float:
        """Count a failure; return how long to wait before trying again."""
        self.failures += 1
        return self.policy.delay(self.failures)

    def succeeded(self) -> None:
        """Start again from the first delay."""
        self.failures = 0
