"""Imports that match the layers, at run time (the layering tests read the source; this
runs a fresh interpreter and looks at ``sys.modules``): importing one part of errands
loads what that part needs and nothing of the others."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

SERVICE = ("errands.sync", "starlette", "fastapi", "uvicorn")
"""The sync service and its web stack."""
COMMAND_LINE = ("errands.cli", "click")
WORKER = ("errands.worker", "errands.metrics", "prometheus_client", "cronsim")
CLIENT = ("errands.client", "httpx")


def loaded_by(module: str) -> set[str]:
    """The top-level packages and errands modules a fresh interpreter holds after
    ``import module``."""
    script = f"import json, sys, {module}; print(json.dumps(sorted(sys.modules)))"
    ran = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    modules = json.loads(ran.stdout)
    return {name for name in modules if "." not in name or name.startswith("errands.")}


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        ("errands", SERVICE + COMMAND_LINE + WORKER + CLIENT + ("pydantic", "psycopg")),
        ("errands.protocol", SERVICE + COMMAND_LINE + WORKER + CLIENT + ("psycopg",)),
        ("errands.client", (*SERVICE, "errands.cli", *WORKER)),
        ("errands.worker", SERVICE + COMMAND_LINE + CLIENT),
    ],
)
def test_a_part_loads_only_what_it_needs(module: str, forbidden: tuple[str, ...]) -> None:
    loaded = loaded_by(module)
    assert sorted(set(forbidden) & loaded) == []


def test_the_facade_still_gives_every_public_name() -> None:
    script = (
        "import errands; names = [getattr(errands, n) for n in errands.__all__]; "
        "from errands import Client, Worker; print(Client.__module__, Worker.__module__)"
    )
    ran = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert ran.stdout.split() == ["errands.client.client", "errands.worker.worker"]
