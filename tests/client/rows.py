"""Job rows as the sync service delivers them, for the client's unit tests."""

from __future__ import annotations

from typing import Any


def server_row(job_id: str, **changes: Any) -> dict[str, Any]:
    """A queued job of alice's, with ``changes`` applied."""
    row: dict[str, Any] = {
        "id": job_id,
        "timestamp": "2026-01-01T00:00:00+00:00",
        "kind": "add",
        "payload": {"a": 1},
        "owner": "alice",
        "state": "queued",
        "cancelled": False,
        "completed": False,
        "progress": 0.0,
        "attempts": 0,
        "max_attempts": 3,
    }
    return {**row, **changes}
