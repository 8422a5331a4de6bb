"""JSON checks for payloads and results: fail early, with a message that says why.

What the write path accepts, the read path must serve to every client (see
:mod:`errands.protocol`): so a payload or a handler's result is refused here when it is
nested deeper than :data:`~errands.protocol.MAX_JSON_DEPTH`, larger than
:data:`~errands.protocol.MAX_PAYLOAD_BYTES`, or holds what ``jsonb`` cannot store.
"""

from __future__ import annotations

import json
from typing import Any

from errands.exceptions import PayloadError
from errands.protocol import MAX_PAYLOAD_BYTES, json_depth_problem

# One encoder for every call: json.dumps with options builds a new one each time, a
# third of the cost of dumping a small payload (enqueue_many dumps thousands at once).
_ENCODER = json.JSONEncoder(allow_nan=False, ensure_ascii=False, separators=(",", ":"))


class PayloadTooLarge(PayloadError):
    """The value's JSON is larger than the limit; send a reference to the data instead."""


def dump_json(value: Any, what: str = "payload", *, max_bytes: int = MAX_PAYLOAD_BYTES) -> str:
    """Serialise ``value`` as JSON every errands client can read back, or raise
    :class:`PayloadError` (:class:`PayloadTooLarge` when only its size is wrong).

    Beyond what :func:`json.dumps` refuses, that rules out NaN and Infinity, NUL
    characters and unpaired surrogates in strings, nesting deeper than
    ``MAX_JSON_DEPTH`` and more than ``max_bytes`` bytes of UTF-8.
    """
    problem = json_depth_problem(value)
    if problem is not None:
        raise PayloadError(f"the {what} cannot be stored: {problem}")
    try:
        text = _ENCODER.encode(value)
    except (TypeError, ValueError) as exc:
        raise PayloadError(f"the {what} is not JSON-serialisable: {exc}") from exc
    if len(text) * 4 <= max_bytes:  # no character takes more than 4 bytes of UTF-8
        return text
    size = len(text.encode())
    if size > max_bytes:
        raise PayloadTooLarge(f"the {what} is {size} bytes of JSON; the limit is {max_bytes}")
    return text


def printable(text: str) -> str:
    """``text`` made storable in a Postgres text column: no NULs, no lone surrogates."""
    return text.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")
