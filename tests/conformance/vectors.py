"""The conformance vectors (README.md beside this file), read and expanded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent


def expand(value: Any) -> Any:
    """``value`` with the macros written out: ``{"$repeat": [TEXT, N]}``,
    ``{"$list": [VALUE, N]}`` and ``{"$nest": N}``."""
    if isinstance(value, dict):
        if set(value) == {"$repeat"}:
            text, times = value["$repeat"]
            return text * times
        if set(value) == {"$list"}:
            item, count = value["$list"]
            return [expand(item)] * count
        if set(value) == {"$nest"}:
            nested: list[Any] = []
            for _ in range(value["$nest"] - 1):
                nested = [nested]
            return nested
        return {key: expand(item) for key, item in value.items()}
    if isinstance(value, list):
        return [expand(item) for item in value]
    return value


def cases(name: str, part: str = "cases") -> list[dict[str, Any]]:
    """The cases of ``NAME.json`` (or another ``part`` of it), as written (run.mjs
    expands them its own way)."""
    data = json.loads((HERE / f"{name}.json").read_text("utf-8"))
    return list(data[part])
