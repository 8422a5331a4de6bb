"""The example's job: write an order's invoice, reporting progress as it goes.

Run it with ``errands worker invoices:registry`` (from this folder).
"""

from __future__ import annotations

import asyncio
from typing import Any

from errands import JobContext, Registry

registry = Registry()

STEPS = 5


@registry.job("invoice", timeout=60)
async def invoice(ctx: JobContext, payload: dict[str, Any]) -> dict[str, Any]:
    """Pretend to lay out and send an invoice, one step at a time."""
    step_seconds = float(payload.get("step_seconds", 0.2))
    for step in range(1, STEPS + 1):
        await asyncio.sleep(step_seconds)
        await ctx.progress(step / STEPS, f"step {step} of {STEPS}")
    return {"order": payload["order"], "total": payload["quantity"] * 12}
