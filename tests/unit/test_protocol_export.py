"""The rules protocol.py exports: rules.js is generated from them, and kept fresh."""

from __future__ import annotations

import json
import subprocess
import sys

from errands import protocol
from errands.protocol_export import RULES_JS, main, rules_module


def test_rules_js_is_fresh() -> None:
    """A rule changed in protocol.py reaches errands.js only through the generator:
    run ``make rules`` (``python -m errands.protocol_export``) when this fails."""
    assert RULES_JS.read_text("utf-8") == rules_module()
    assert main(["--check"]) == 0


def test_the_export_is_plain_json_of_every_rule() -> None:
    ran = subprocess.run(
        [sys.executable, "-m", "errands.protocol_export", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    rules = json.loads(ran.stdout)
    assert rules == json.loads(json.dumps(protocol.rules()))
    assert rules["max_json_depth"] == protocol.MAX_JSON_DEPTH
    assert rules["length_unit"] == "code_point"
    assert set(rules["error_codes"].values()) == {code.value for code in protocol.ErrorCode}
    assert rules["job_options"]["priority"] == {"type": "integer", "min": -1000, "max": 1000}


def test_check_job_options_follows_the_table() -> None:
    """The Python check reads the same table the export carries."""
    protocol.check_job_options({"priority": protocol.MAX_PRIORITY, "run_at": "2030-01-01"})
    for bad in (
        {"priority": protocol.MAX_PRIORITY + 1},
        {"queue": "x" * (protocol.MAX_NAME_LENGTH + 1)},
        {"run_at": "soon"},
    ):
        try:
            protocol.check_job_options(bad)
        except ValueError:
            continue
        raise AssertionError(f"accepted {bad}")
