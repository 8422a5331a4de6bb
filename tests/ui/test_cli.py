"""``errands ui`` as a command: clear errors for bad options, and a clean stop with a
page still open."""

from __future__ import annotations

import re
import signal
import socket
from pathlib import Path

import httpx

from tests.helpers import ErrandsProcess


def run_ui(tmp_path: Path, server: str, *args: str) -> ErrandsProcess:
    """``errands ui`` with a replica in tmp_path."""
    return ErrandsProcess(
        "ui", "--server", server, "--replica", str(tmp_path / "replica.db"), *args
    )


def assert_usage_error(ui: ErrandsProcess, message: str) -> None:
    """The command exits 2 with ``message`` and no traceback."""
    try:
        assert ui.process.wait(30) == 2
        assert message in ui.output()
        assert "Traceback" not in ui.output()
    finally:
        ui.close()


def test_a_bad_kind_is_a_usage_error(tmp_path: Path, dead_server: str) -> None:
    ui = run_ui(tmp_path, dead_server, "--port", "0", "--kind", "primes={n: 1}")
    assert_usage_error(ui, "the example payload of kind 'primes' is not valid JSON")


def test_a_taken_port_is_a_clear_error(tmp_path: Path, dead_server: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        ui = run_ui(tmp_path, dead_server, "--port", str(taken.getsockname()[1]))
        assert_usage_error(ui, "choose another --port")


def test_sigterm_stops_it_cleanly_while_a_page_listens(tmp_path: Path, dead_server: str) -> None:
    ui = run_ui(tmp_path, dead_server, "--port", "0")
    try:
        ui.wait_for_output("the Background Jobs page is at", timeout=30)
        match = re.search(r"http://\S+/", ui.output())
        assert match
        with httpx.stream("GET", f"{match.group(0)}api/events", timeout=30) as events:
            lines = events.iter_lines()
            assert next(lines) == "event: jobs"
            assert ui.stop(signal.SIGTERM, timeout=30) == 0
            rest = list(lines)  # ends: the server closed the stream (a timeout would raise)
        assert rest[0].startswith("data: ")
        assert "Traceback" not in ui.output()
        assert "ERROR" not in ui.output()
    finally:
        ui.close()
