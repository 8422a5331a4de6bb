"""``Job``: one job as the client sees it, synced row plus pending local changes."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from errands.protocol import ANSWERABLE_STATES, question_pending

FINAL_STATES = frozenset({"completed", "failed", "cancelled", "rejected"})
"""States after which a job never changes again. ``rejected`` is the client's own: the
server refused to create the job (see :attr:`Job.rejected`)."""


@dataclass(frozen=True)
class Job:
    """A job row: the columns of the jobs shape as attributes, plus what the client
    knows locally.

    ``pending`` is true until the server has acknowledged every local change to the
    job. ``rejected`` says why the server refused a local change ("code: message"):
    a refused insert leaves the job in state ``rejected``; a refused cancellation is
    reverted, and the job carries on as the server has it.
    """

    id: str
    timestamp: datetime
    kind: str
    payload: Any
    state: str
    cancelled: bool
    completed: bool
    progress: float
    owner: str | None = None
    progress_message: str | None = None
    result: Any = None
    error: Any = None
    attempts: int = 0
    max_attempts: int | None = None
    run_at: datetime | None = None
    priority: int = 0
    queue: str | None = None
    received_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    unique_key: str | None = None
    traceparent: str | None = None
    waiting_for: int = 0
    """How many of the jobs it runs after (``after``) have not ended yet."""
    question: Any = None
    """The question the job asks its owner (``ctx.ask``): ``name``, ``text``,
    ``choices`` (None: any text), ``asked_at``, and ``deadline`` / ``default`` if the
    handler gave them; ``timed_out`` once its deadline passed. None if it asks none."""
    answer: Any = None
    """The answer given to :attr:`question`, until the job runs on with it."""
    pending: bool = False
    rejected: str | None = None

    @property
    def done(self) -> bool:
        """Whether the job has ended: completed, failed, cancelled or rejected."""
        return self.state in FINAL_STATES

    @property
    def asking(self) -> bool:
        """Whether the job waits for its owner's answer to :attr:`question`."""
        return self.state in ANSWERABLE_STATES and question_pending(self.question, self.answer)

    @classmethod
    def from_row(cls, row: dict[str, Any], *, pending: bool, rejected: str | None) -> Job:
        """Build a Job from a row as the shape delivers it (JSON values)."""
        values: dict[str, Any] = {name: row.get(name) for name in _FIELDS if name in row}
        for name in _TIMES:
            if values.get(name) is not None:
                values[name] = parse_time(values[name])
        values["id"] = str(row["id"])
        values["cancelled"] = bool(row.get("cancelled"))
        values["completed"] = bool(row.get("completed"))
        values["progress"] = float(row.get("progress") or 0.0)
        values["waiting_for"] = int(row.get("waiting_for") or 0)
        values.setdefault("state", "queued")
        values.setdefault("kind", "default")
        values.setdefault("payload", None)
        return cls(**values, pending=pending, rejected=rejected)


class Question(NamedTuple):
    """A question one of my jobs asks me (``Client.questions()``); answer it with
    ``Client.answer(job, value)``."""

    job: str
    """The job's id."""
    text: str
    choices: list[Any] | None
    """The answers it takes; None: any text."""
    asked_at: datetime | None
    deadline: datetime | None
    """When it stops waiting (the job then goes on without an answer); None: never."""

    @classmethod
    def of(cls, job: Job) -> Question:
        """The question ``job`` asks."""
        question = job.question
        choices = question.get("choices")
        return cls(
            job.id,
            str(question.get("text", "")),
            list(choices) if isinstance(choices, list) else None,
            _time_or_none(question.get("asked_at")),
            _time_or_none(question.get("deadline")),
        )


def _time_or_none(value: Any) -> datetime | None:
    """A time of the question (None if absent, or unreadable: a row written by hand must
    not break the list of questions)."""
    try:
        return None if value is None else parse_time(value)
    except (TypeError, ValueError):
        return None


_TIMES = ("timestamp", "run_at", "received_at", "started_at", "finished_at")
_FIELDS = frozenset(f.name for f in fields(Job)) - {"pending", "rejected"}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_time(value: Any) -> datetime:
    """A timestamp from the wire (ISO 8601 with a time zone)."""
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def sort_key(timestamp: Any) -> int:
    """Microseconds since the epoch, for ordering jobs newest first."""
    return (parse_time(timestamp) - _EPOCH) // timedelta(microseconds=1)
