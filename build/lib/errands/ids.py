"""Time-ordered job ids (UUIDv7, RFC 9562), so ids sort by creation time."""

from __future__ import annotations

import os
import time
import uuid


def uuid7() -> uuid.UUID:
    """A new UUIDv7: 48 bits of Unix milliseconds, then 74 random bits."""
    millis = time.time_ns() // 1_000_000
    value = (millis & 0xFFFF_FFFF_FFFF) << 80 | int.from_bytes(os.urandom(10), "big")
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version 7
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 4122 variant
    return uuid.UUID(int=value)


_VERSION_AND_VARIANT = (0x7 << 76) | (0x2 << 62)
_KEEP = ~((0xF << 76) | (0x3 << 62))


def uuid7_many(count: int) -> list[uuid.UUID]:
    """``count`` new UUIDv7s, as :func:`uuid7` makes them, for one batch: one clock read
    and one call for the random bits (a batched enqueue makes thousands at once)."""
    stamp = (time.time_ns() // 1_000_000 & 0xFFFF_FFFF_FFFF) << 80
    noise = os.urandom(10 * count)
    return [
        uuid.UUID(int=(stamp | int.from_bytes(noise[i : i + 10])) & _KEEP | _VERSION_AND_VARIANT)
        for i in range(0, 10 * count, 10)
    ]
