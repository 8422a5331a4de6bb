"""Handlers whose results no client could read back, for test_results.py."""

from __future__ import annotations

from typing import Any

import errands

registry = errands.Registry()


@registry.job("deep")
def deep(ctx: errands.JobContext, payload: Any) -> Any:
    """A result nested as deep as the payload asks."""
    value: Any = "bottom"
    for _ in range(payload["depth"]):
        value = [value]
    return value


@registry.job("nul")
def nul(ctx: errands.JobContext, payload: Any) -> Any:
    """A result holding a NUL character."""
    return {"text": "a\x00b"}
