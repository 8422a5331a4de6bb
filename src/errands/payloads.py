"""JSON checks for payloads and results: fail early, with a message that says why."""

from __future__ import annotations

import json
import re
from typing import Any

from errands.exceptions import PayloadError

# An escaped NUL that is not itself an escaped backslash followed by "u0000".
_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def dump_json(value: Any, what: str = "payload") -> str:
    """Serialise ``value`` as JSON that Postgres' ``jsonb`` accepts, or raise PayloadError.

    Beyond what :func:`json.dumps` refuses, that rules out NaN and Infinity, NUL
    characters and unpaired surrogates in strings.
    """
    try:
        text = json.dumps(value, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
        text.encode("utf-8")
    except (TypeError, ValueError) as exc:  # UnicodeEncodeError is a ValueError
        raise PayloadError(f"the {what} is not JSON-serialisable: {exc}") from exc
    if _NUL.search(text):
        raise PayloadError(
            f"the {what} contains a NUL character (\\u0000), which jsonb cannot store"
        )
    return text


def printable(text: str) -> str:
    """``text`` made storable in a Postgres text column: no NULs, no lone surrogates."""
    return text.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")
