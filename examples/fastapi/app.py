"""A FastAPI app that enqueues errands jobs in its own transactions and streams their
progress to the page.

* ``POST /orders`` inserts an order, enqueues its invoice and takes the stock, in one
  transaction: when the stock runs short, the job goes with the order (409).
* ``GET /orders/jobs/{job_id}`` is the job's row; ``GET /orders/jobs/{job_id}/events``
  streams its state and progress (server-sent events) until it ends.

The lifespan opens a connection pool and closes it: the web process runs no worker
(``errands worker invoices:registry`` does) and holds no connection while a stream waits.

    DATABASE_URL=postgresql://... uvicorn app:app
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict
from typing import Any

import psycopg
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import StreamingResponse
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel, Field

import errands

POLL_SECONDS = 0.2
"""How often a progress stream reads the job (the worker writes progress a few times a
second at most)."""

TABLES = """
CREATE TABLE IF NOT EXISTS stock (
    item text PRIMARY KEY,
    available integer NOT NULL CHECK (available >= 0)
);
CREATE TABLE IF NOT EXISTS orders (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    item text NOT NULL REFERENCES stock,
    quantity integer NOT NULL CHECK (quantity > 0)
);
INSERT INTO stock VALUES ('teapot', 10), ('kettle', 3) ON CONFLICT DO NOTHING;
"""
"""The example's own tables: a stand-in for your migrations."""


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Open the pool (and the example's table, a stand-in for your migrations)."""
    async with AsyncConnectionPool(os.environ["DATABASE_URL"], min_size=1, max_size=10) as pool:
        async with pool.connection() as conn:
            await conn.execute(TABLES)
        app.state.pool = pool
        yield


app = FastAPI(title="errands + FastAPI", lifespan=lifespan)


class Order(BaseModel):
    """What the client orders."""

    item: str = Field(min_length=1, max_length=100)
    quantity: int
    step_seconds: float = Field(default=0.2, ge=0, le=5)


@app.post("/orders", status_code=201)
async def place_order(order: Order, request: Request) -> dict[str, Any]:
    """The order, its invoice job and the stock it takes, in one transaction: when the
    stock runs short the job goes with the order, and no invoice is ever sent for it."""
    async with request.app.state.pool.connection() as conn, conn.transaction():
        cursor = await conn.execute(
            "INSERT INTO orders (item, quantity) VALUES (%s, %s) RETURNING id",
            (order.item, order.quantity),
        )
        order_id = (await cursor.fetchone())[0]
        payload = {
            "order": order_id,
            "quantity": order.quantity,
            "step_seconds": order.step_seconds,
        }
        job_id = await errands.enqueue_async(conn, "invoice", payload)
        try:
            await conn.execute(
                "UPDATE stock SET available = available - %s WHERE item = %s",
                (order.quantity, order.item),
            )
        except psycopg.errors.CheckViolation:
            raise HTTPException(409, f"not enough {order.item} in stock") from None
    return {"order": order_id, "job": str(job_id)}


@app.get("/orders/jobs/{job_id}")
async def job(job_id: str, request: Request) -> dict[str, Any]:
    """The job's row (state, progress, result, error)."""
    async with request.app.state.pool.connection() as conn:
        record = await errands.get_async(conn, job_id)
    if record is None:
        raise HTTPException(404, "no such job")
    return _public(record)


@app.get("/orders/jobs/{job_id}/events")
async def job_events(job_id: str, request: Request) -> StreamingResponse:
    """The job's state and progress as server-sent events, one per change, until it ends."""
    pool: AsyncConnectionPool = request.app.state.pool
    return StreamingResponse(_follow(pool, job_id, request), media_type="text/event-stream")


async def _follow(pool: AsyncConnectionPool, job_id: str, request: Request) -> AsyncIterator[str]:
    last: tuple[Any, ...] | None = None
    while not await request.is_disconnected():
        async with pool.connection() as conn:  # held for one read, not for the stream
            record = await errands.get_async(conn, job_id)
        if record is None:
            yield _event("gone", {"id": job_id})
            return
        now = (record.state, record.progress, record.progress_message)
        if now != last:
            last = now
            yield _event("job", _public(record))
        if record.done:
            return
        await asyncio.sleep(POLL_SECONDS)


def _public(record: errands.JobRecord) -> dict[str, Any]:
    shown = ("id", "state", "progress", "progress_message", "result", "error")
    return {key: value for key, value in asdict(record).items() if key in shown} | {
        "id": str(record.id)
    }


def _event(name: str, data: dict[str, Any]) -> str:
    return f"event: {name}\ndata: {json.dumps(data, default=str)}\n\n"
