"""JSON checks for payloads and results: fail early, with a message that says why."""

from __future__ import annotations

import json
from typing import Any

from errands.exceptions import PayloadError


def dump_json(value: Any, what: str = "payload") -> str:
    """Serialise ``value`` as strict JSON (no NaN or Infinity), or raise PayloadError."""
    try:
        return json.dumps(value, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise PayloadError(f"the {what} is not JSON-serialisable: {exc}") from exc
