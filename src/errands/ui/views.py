"""What the page sees: jobs and the client's status as plain JSON-ready dicts."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from errands.jobs import FINAL_STATES


class JobRow(Protocol):
    """The attributes of :class:`errands.Job` the page shows."""

    id: Any
    kind: str
    payload: Any
    timestamp: Any
    state: str
    cancelled: bool
    progress: float
    progress_message: str | None
    result: Any
    error: dict[str, Any] | None
    attempts: int
    max_attempts: int
    pending: bool


def job_view(job: JobRow) -> dict[str, Any]:
    """One row of the jobs table."""
    job_id = str(job.id)
    error = job.error or None
    return {
        "id": job_id,
        # UUIDv7 ids start with the time, so jobs made together share their first
        # characters; the random tail tells them apart.
        "short_id": job_id.replace("-", "")[-8:],
        "kind": job.kind,
        "payload": job.payload,
        "timestamp": _iso(job.timestamp),
        "state": job.state,
        "ended": job.state in FINAL_STATES,
        "cancel_requested": bool(job.cancelled),
        "progress": float(job.progress or 0.0),
        "progress_message": job.progress_message,
        "result": job.result,
        "error": _error_view(error),
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "pending": bool(job.pending),
    }


def _error_view(error: dict[str, Any] | None) -> dict[str, Any] | None:
    if error is None:
        return None
    return {
        "type": error.get("type"),
        "message": error.get("message") or error.get("type") or "failed",
        "traceback": error.get("traceback"),
    }


def _iso(value: Any) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)


class ClientStatus(Protocol):
    """The attributes of the client's status the page shows."""

    connected: bool
    reason: str | None
    pending: int


def status_view(status: ClientStatus, *, enabled: bool) -> dict[str, Any]:
    """The connectivity switch: on or off (``enabled``), whether the client is connected
    (or why not), and how many local changes wait for upload."""
    return {
        "enabled": enabled,
        "connected": bool(status.connected),
        "reason": status.reason,
        "pending": int(status.pending),
    }
