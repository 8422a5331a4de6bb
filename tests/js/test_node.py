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


def test_errands_js_reads_the_rules_protocol_py_exports() -> None:
    module = json.dumps((WEB / "model.js").as_uri())
    script = f"import({module}).then(m => console.log(JSON.stringify([m.RULES, m.PROTOCOL])))"
    ran = node("--input-type=module", "-e", script)
    assert ran.returncode == 0, ran.stderr
    rules, constants = json.loads(ran.stdout)
    assert rules == protocol.rules()
    assert constants["MAX_KIND_LENGTH"] == protocol.MAX_KIND_LENGTH
    assert constants["BAD_OFFSET"] == protocol.ErrorCode.BAD_OFFSET.value


def test_the_page_declares_no_limits_of_its_own() -> None:
    """The page's view checks the options with model.js, by the exported rules: no
    number of the protocol is written into it."""
    view = (STATIC / "view.js").read_text("utf-8")
    assert 'from "./model.js"' in view
    options = view[view.index("// -- the job's options") : view.index("// -- connectivity")]
    for limit in (protocol.MAX_PRIORITY, protocol.MAX_ATTEMPTS, protocol.MAX_NAME_LENGTH):
        assert not re.search(rf"\b{limit}\b", options), limit
