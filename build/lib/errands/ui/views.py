"""What the page sees: jobs and the client's status as plain JSON-ready dicts."""

from __future__ import annotations

from typing import Any

from errands.client import Job, Status


def job_view(job: Job) -> dict[str, Any]:
    """One row of the jobs table."""
    return {
        "id": job.id,
        # UUIDv7 ids start with the time, so jobs made together share their first
        # characters; the random tail tells them apart.
        "short_id": job.id.replace("-", "")[-8:],
        "kind": job.kind,
        "payload": job.payload,
        "timestamp": job.timestamp.isoformat(),
        "state": job.state,
        "ended": job.done,
        "cancel_requested": job.cancelled,
        "progress": job.progress,
        "progress_message": job.progress_message,
        "result": job.result,
        "error": _error_view(job.error),
        "rejected": job.rejected,
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "pending": job.pending,
    }


def _error_view(error: Any) -> dict[str, Any] | None:
    if not error:
        return None
    if not isinstance(error, dict):  # a row written by hand may hold any JSON
        return {"type": None, "message": str(error), "traceback": None}
    return {
        "type": error.get("type"),
        "message": error.get("message") or error.get("type") or "failed",
        "traceback": error.get("traceback"),
    }


def status_view(status: Status, *, enabled: bool) -> dict[str, Any]:
    """The connectivity switch: on or off (``enabled``), whether the client is connected
    (or why not), and how many local changes wait for upload."""
    return {
        "enabled": enabled,
        "connected": status.connected,
        "reason": status.reason,
        "pending": status.pending,
        "rejected": status.rejected,
    }
