"""Spans of time on the command line: ``30d``, ``12h``, ``90m``, ``45s``, ``2w`` (or
plain seconds), and points in time: a span ago, or an ISO 8601 date or time."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import click

_SPAN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_span(text: str) -> timedelta:
    """``30d`` -> 30 days; ValueError for anything else."""
    match = _SPAN.match(text.lower())
    if not match:
        raise ValueError(f"{text!r} is not a span of time; write e.g. 30d, 12h, 90m or 45s")
    return timedelta(seconds=float(match[1]) * _UNITS[match[2]])


def span_option(_ctx: click.Context, _param: click.Parameter, text: str | None) -> timedelta | None:
    """A click callback: the option's span as a timedelta, a usage error if it is not one."""
    if text is None:
        return None
    try:
        return parse_span(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def since_option(_ctx: click.Context, _param: click.Parameter, text: str | None) -> datetime | None:
    """A click callback: a span ago (``1h``: an hour ago) or an ISO 8601 date or time
    (without a zone: local time), as an aware datetime."""
    if text is None:
        return None
    try:
        return datetime.now(UTC) - parse_span(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is neither a span (1h, 2d) nor an ISO 8601 time (2026-12-01T10:00)"
        ) from None
    return when if when.tzinfo else when.astimezone()
