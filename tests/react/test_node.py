"""errands-react.js under Node: React renders its hooks on happy-dom (node --test), and
TypeScript checks its types and errands.js's as an app sees them (types.ts)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

HERE = Path(__file__).parent
REACT = HERE / "node_modules" / "react"


def test_the_hooks_render_in_node() -> None:
    assert REACT.is_dir(), "React is not installed for the tests: run `make test` (npm ci)"
    ran = subprocess.run(
        ["node", "--test", "--test-reporter=tap", str(HERE / "hooks.test.mjs")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=HERE,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    passed = re.search(r"^# pass (\d+)$", ran.stdout, re.MULTILINE)
    assert passed, ran.stdout
    assert int(passed.group(1)) >= 8, ran.stdout


def test_the_types_hold_for_an_app_in_typescript() -> None:
    tsc = HERE / "node_modules" / "typescript" / "bin" / "tsc"
    assert tsc.is_file(), "TypeScript is not installed for the tests: run `make test` (npm ci)"
    ran = subprocess.run(
        ["node", str(tsc), "-p", str(HERE / "tsconfig.json")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
