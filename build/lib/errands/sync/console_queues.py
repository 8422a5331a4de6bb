"""The console's queues and schedules (part of :mod:`errands.sync.console`)::

    GET  /v1/admin/queues                  every queue: depth, running, oldest waiting,
                                           finished in the last hour, paused or not
    POST /v1/admin/queues/{name}/pause     no worker claims from it until resumed
    POST /v1/admin/queues/{name}/resume    (a read-only operator: 403)
    GET  /v1/admin/schedules               each periodic schedule's newest tick

The reads and changes are :mod:`errands.queues`.
"""

from __future__ import annotations

import logging
from typing import Annotated, Literal

from fastapi import APIRouter, Path
from pydantic import BaseModel

from errands import queues as queue_ops
from errands.protocol import MAX_KIND_LENGTH
from errands.sync.operators import ADMIN, ERRORS, Acting, OperatorPool

log = logging.getLogger("errands.console")
router = APIRouter()

QueueName = Annotated[str, Path(min_length=1, max_length=MAX_KIND_LENGTH, pattern=r"^[^\x00]+$")]


class Queues(BaseModel):
    """Every queue the database knows of, by name."""

    queues: list[queue_ops.QueueInfo]


class QueueChange(BaseModel):
    """What a pause or resume did: ``changed`` is false if the queue already was so."""

    queue: str
    paused: bool
    changed: bool


class Schedules(BaseModel):
    """Each periodic schedule that ever ran, with its newest tick and job. The next run
    is known to the workers' registries (``errands schedules MODULE:REGISTRY``)."""

    schedules: list[queue_ops.ScheduleRun]


@router.get(f"{ADMIN}/queues", response_model=Queues, responses=ERRORS)
async def queues(pool: OperatorPool) -> Queues:
    """Each queue's depth, running jobs, oldest waiting job (by ``received_at``),
    throughput over the last hour, and whether it is paused."""
    async with pool.connection() as conn:
        return Queues(queues=await queue_ops.queues_async(conn))


@router.post(f"{ADMIN}/queues/{{name}}/{{change}}", response_model=QueueChange, responses=ERRORS)
async def change_queue(
    operator: Acting, name: QueueName, change: Literal["pause", "resume"]
) -> QueueChange:
    """Pause a queue (workers stop claiming from it at their next claim; running jobs
    finish) or resume it (the workers are woken)."""
    act = queue_ops.pause_async if change == "pause" else queue_ops.resume_async
    async with operator.writing() as conn:
        changed = await act(conn, name, operator=operator.name)
    if changed:
        log.info("operator %s: %s queue %s", operator.name, change, name)
    return QueueChange(queue=name, paused=change == "pause", changed=changed)


@router.get(f"{ADMIN}/schedules", response_model=Schedules, responses=ERRORS)
async def schedules(pool: OperatorPool) -> Schedules:
    """Each periodic schedule's last run and the job it made."""
    async with pool.connection() as conn:
        return Schedules(schedules=await queue_ops.schedule_runs_async(conn))
