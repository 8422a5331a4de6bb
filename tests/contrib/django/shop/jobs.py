"""An errands registry of the shop's own (not Django tasks): ``manage.py errands_worker``
runs it too, as ``OPTIONS["REGISTRIES"]`` names it."""

from __future__ import annotations

from typing import Any

from errands import JobContext, Registry

registry = Registry()


@registry.job("shop.restock")
def restock(ctx: JobContext, payload: Any) -> dict[str, Any]:
    """Say how many items came in."""
    return {"restocked": payload["count"]}
