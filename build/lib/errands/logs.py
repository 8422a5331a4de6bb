"""Logs as JSON lines, for log collectors: ``--log-format json`` on ``errands server``
and ``errands worker``.

Each record is one line: ``time`` (ISO 8601, UTC), ``level``, ``logger``, ``message``,
``pid``, ``exception`` (the formatted traceback, if any), and any ``extra={...}``
fields the code logged with.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])
LOG_FORMATS = ("text", "json")
# What every LogRecord has: anything else was passed in ``extra``.
_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        document: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in document:
                document[key] = value
        return json.dumps(document, default=str, ensure_ascii=False)


def use_json_logs(verbose: bool = False) -> None:
    """Send every log record to standard error as a JSON line."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    level = logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(level=level, handlers=[handler], force=True)


def log_format_option(function: F) -> F:
    """``--log-format text|json`` / ``ERRANDS_LOG_FORMAT``."""
    return click.option(
        "--log-format",
        type=click.Choice(LOG_FORMATS),
        default="text",
        show_default=True,
        envvar="ERRANDS_LOG_FORMAT",
        show_envvar=True,
        help="json: one JSON object per line on standard error, for log collectors.",
    )(function)
