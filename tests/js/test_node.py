"""errands.js under Node: its unit tests (node --test), and its protocol constants held
equal to errands.protocol's."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from errands import protocol
from errands.sync.web import WEB
from errands.ui.app import STATIC

HERE = Path(__file__).parent


def node(*args: str) -> subprocess.CompletedProcess[str]:
    """Run Node (``make test`` checks it is installed: scripts/test-prerequisites)."""
    return subprocess.run(
        ["node", *args], capture_output=True, text=True, timeout=60, check=False, cwd=HERE
    )


def test_the_node_unit_tests_pass() -> None:
    ran = node("--test", "--test-reporter=tap", str(HERE))
    assert ran.returncode == 0, ran.stdout + ran.stderr
    passed = re.search(r"^# pass (\d+)$", ran.stdout, re.MULTILINE)
    assert passed, ran.stdout
    assert int(passed.group(1)) > 30, ran.stdout


def test_the_protocol_constants_are_the_python_ones() -> None:
    module = json.dumps((WEB / "model.js").as_uri())
    script = f"import({module}).then(m => console.log(JSON.stringify(m.PROTOCOL)))"
    ran = node("--input-type=module", "-e", script)
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout) == {
        "PREFIX": protocol.PREFIX,
        "START": protocol.START,
        "JOBS_TABLE": protocol.JOBS_TABLE,
        "MAX_BATCH": protocol.MAX_BATCH,
        "MAX_PAYLOAD_BYTES": protocol.MAX_PAYLOAD_BYTES,
        "MAX_KIND_LENGTH": protocol.MAX_KIND_LENGTH,
        "MAX_PRIORITY": protocol.MAX_PRIORITY,
        "MAX_ATTEMPTS": protocol.MAX_ATTEMPTS,
        "MAX_NAME_LENGTH": protocol.MAX_NAME_LENGTH,
        "MAX_BODY_BYTES": protocol.MAX_BODY_BYTES,
        "LIVE_HOLD_SECONDS": protocol.LIVE_HOLD_SECONDS,
        "BAD_OFFSET": protocol.ErrorCode.BAD_OFFSET.value,
    }


def test_the_page_checks_the_job_options_with_the_protocols_limits() -> None:
    module = json.dumps((STATIC / "view.js").as_uri())
    script = f"import({module}).then(m => console.log(JSON.stringify(m.OPTION_LIMITS)))"
    ran = node("--input-type=module", "-e", script)
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout) == {
        "MAX_PRIORITY": protocol.MAX_PRIORITY,
        "MAX_ATTEMPTS": protocol.MAX_ATTEMPTS,
        "MAX_NAME_LENGTH": protocol.MAX_NAME_LENGTH,
    }
