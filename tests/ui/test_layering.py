"""The page runs in the client process: its code never imports the sync service or the
worker (the demo starts those as separate processes)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import errands

SOURCE = Path(errands.__file__).parent
FORBIDDEN = ("errands.sync", "errands.worker", "errands.cli.server", "errands.cli.worker")
PAGE_MODULES = [
    *sorted((SOURCE / "ui").glob("*.py")),
    *sorted((SOURCE / "demo").glob("*.py")),
    SOURCE / "cli" / "ui.py",
]


def imported(path: Path) -> set[str]:
    """Every module a file imports."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("path", PAGE_MODULES, ids=lambda path: path.name)
def test_page_code_imports_neither_the_sync_service_nor_the_worker(path: Path) -> None:
    bad = {name for name in imported(path) if name.startswith(FORBIDDEN)}
    assert not bad, f"{path.name} imports {sorted(bad)}"
