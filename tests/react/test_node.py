"""errands-react.js's hooks under Node (node --test): React renders them on happy-dom."""

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
