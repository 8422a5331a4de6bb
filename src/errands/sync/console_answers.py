"""An operator answers a job's question (part of :mod:`errands.sync.console`)::

    POST /v1/admin/jobs/{id}/answer    {"value": ...}: the answer to the question the
                                       job waits on (a read-only operator: 403)

The same rule and query as an owner's answer through the sync service
(:func:`errands.workflows.answer_async`): one of the question's choices, or a text for
a question without any, applied at most once; ``job_events`` records it as
``answered`` under the operator's name.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict

from errands import workflows
from errands.exceptions import JobNotFound, PayloadError
from errands.protocol import ErrorCode, ErrorResponse, QuestionClosed
from errands.sync.errors import BadRequest, Conflict, NotFound
from errands.sync.operators import ADMIN, ERRORS, Acting

log = logging.getLogger("errands.console")
router = APIRouter()

_ANSWER_ERRORS: dict[int | str, dict[str, Any]] = ERRORS | {
    404: {"model": ErrorResponse, "description": "not_found: no job has this id"},
    409: {
        "model": ErrorResponse,
        "description": "question_closed: the job has no question waiting for an answer",
    },
}


class AnswerRequest(BaseModel):
    """The answer: one of the question's choices, or a text if it has none."""

    model_config = ConfigDict(extra="forbid")
    value: Any


class Answered(BaseModel):
    """The job answered; it runs on with ``value``."""

    job: uuid.UUID
    value: Any


@router.post(f"{ADMIN}/jobs/{{job_id}}/answer", response_model=Answered, responses=_ANSWER_ERRORS)
async def answer(operator: Acting, job_id: uuid.UUID, request: AnswerRequest) -> Answered:
    """Answer the question the job waits on, as an operator: 404 for an unknown job,
    409 ``question_closed`` if no question waits, 400 ``validation_error`` for a value
    the question does not take."""
    try:
        async with operator.writing() as conn:
            await workflows.answer_async(conn, job_id, request.value, operator=operator.name)
    except JobNotFound as exc:
        raise NotFound(str(exc)) from None
    except QuestionClosed as exc:
        raise Conflict(str(exc), ErrorCode.QUESTION_CLOSED) from None
    except (ValueError, PayloadError) as exc:
        raise BadRequest(str(exc), ErrorCode.VALIDATION_ERROR) from None
    log.info("operator %s answered job %s", operator.name, job_id)
    return Answered(job=job_id, value=request.value)
