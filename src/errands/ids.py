"""Time-ordered job ids (UUIDv7, RFC 9562), so ids sort by creation time.

Each id this process makes is above the one before (RFC 9562's monotonic random, section
6.2 method 2): jobs enqueued in one millisecond, or in one batch, still list in the order
they were asked for. Where a new id would not be above the last, it is the last plus a
random step of up to 2**40, so it stays unguessable from the one before."""

from __future__ import annotations

import os
import threading
import time
import uuid

_RANDOM_BITS = (1 << 74) - 1
_STEP_BITS = (1 << 40) - 1
_RANDOM_B = (1 << 62) - 1  # the random bits after the variant
_VERSION_AND_VARIANT = (0x7 << 76) | (0x2 << 62)


class _Rising:
    """The last id this process made, and the rule that keeps the next ones above it."""

    def __init__(self) -> None:
        self.forget()

    def forget(self) -> None:
        """Start afresh, as a forked child does: a child and its parent stepping from
        the same last id would draw ids only 40 random bits apart, not 74."""
        self._lock = threading.Lock()  # ids are made on several threads (Django, the API)
        self._last = 0

    def follow(self, values: list[int]) -> list[int]:
        """``values`` (ascending, as milliseconds then 74 random bits), each raised above
        the one before. A step past the random bits carries into the milliseconds, and a
        clock that stepped back is not followed: ids keep rising until it catches up."""
        risen = []
        with self._lock:
            last = self._last
            for value in values:
                last = value if value > last else last + 1 + (value & _STEP_BITS)
                risen.append(last)
            self._last = last
        return risen


_rising = _Rising()
os.register_at_fork(after_in_child=_rising.forget)


def uuid7() -> uuid.UUID:
    """A new UUIDv7: 48 bits of Unix milliseconds, then 74 random bits."""
    return uuid7_many(1)[0]


def uuid7_many(count: int) -> list[uuid.UUID]:
    """``count`` new UUIDv7s, in ascending order, as :func:`uuid7` makes them: one clock
    read and one call for the random bits (a batched enqueue makes thousands at once)."""
    millis = (time.time_ns() // 1_000_000 & 0xFFFF_FFFF_FFFF) << 74
    noise = os.urandom(10 * count)
    values = sorted(
        millis | int.from_bytes(noise[i : i + 10]) & _RANDOM_BITS for i in range(0, 10 * count, 10)
    )
    return [uuid.UUID(int=_spread(value)) for value in _rising.follow(values)]


def _spread(value: int) -> int:
    """48 bits of milliseconds and 74 random bits laid out as a UUIDv7: the milliseconds,
    the version, 12 random bits, the variant, 62 random bits."""
    return (
        value >> 74 << 80 | (value >> 62 & 0xFFF) << 64 | value & _RANDOM_B | _VERSION_AND_VARIANT
    )
