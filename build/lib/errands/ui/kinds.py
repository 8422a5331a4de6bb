"""The job kinds the page offers, each with an example payload for the editor."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from errands.exceptions import ConfigurationError


@dataclass(frozen=True)
class Kind:
    """A kind of job the page can submit, and the payload its editor starts with."""

    name: str
    example: Any = field(default_factory=dict)


def parse_kind(spec: str) -> Kind:
    """Parse ``NAME`` or ``NAME=JSON`` (the example payload) from the command line."""
    name, sep, example = spec.partition("=")
    name = name.strip()
    if not name:
        raise ConfigurationError(f"a kind needs a name, as NAME or NAME=JSON, not {spec!r}")
    if not sep:
        return Kind(name)
    try:
        return Kind(name, json.loads(example))
    except json.JSONDecodeError as exc:
        raise ConfigurationError(
            f"the example payload of kind {name!r} is not valid JSON: {exc}"
        ) from None
