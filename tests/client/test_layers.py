"""The client speaks to the service only through errands.protocol (docs/design.md,
"Where each piece lives"): no module of errands.client imports the sync service, the
worker or the command line."""

from __future__ import annotations

import ast
from importlib import resources

FORBIDDEN = ("errands.sync", "errands.worker", "errands.cli", "errands.registry", "errands.jobs")


def imported_modules(source: str) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_the_client_imports_neither_server_nor_worker_nor_cli() -> None:
    modules = [f for f in resources.files("errands.client").iterdir() if f.name.endswith(".py")]
    assert len(modules) >= 5
    for module in modules:
        imports = imported_modules(module.read_text())
        bad = sorted(i for i in imports if any(i == f or i.startswith(f + ".") for f in FORBIDDEN))
        assert not bad, f"{module.name} imports {bad}"
