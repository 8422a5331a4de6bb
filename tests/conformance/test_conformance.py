"""One rule set, every client: the vectors of tests/conformance/ (README.md) run against
the Python client, errands.js in Node, and the sync service over real HTTP. Each case
is a test per implementation, so a rule changed in one place and not the others fails
by name."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from errands.client.replica import Replica
from errands.exceptions import ErrandsError
from errands.payloads import PayloadTooLarge
from errands.protocol import JOBS_TABLE, PREFIX, ErrorCode, Offset
from errands.sync.auth import make_token
from tests.client.processes import SECRET, SyncServer
from tests.conformance.vectors import HERE, cases, expand
from tests.conftest import create_database, drop_database

Outcome = dict[str, Any]
JOBS = cases("jobs")
OFFSETS = cases("offsets")


def _ids(case: dict[str, Any]) -> str:
    return str(case["name"])


def check(outcome: Outcome, expect: dict[str, Any], *, values: bool = True) -> None:
    """``outcome`` is what the vector expects (``values``: and the values it names)."""
    if "refused" in expect:
        assert outcome.get("refused") == expect["refused"], outcome
        return
    assert outcome.get("accepted") is True, outcome
    if values:
        for key, value in expect.items():
            if key != "accepted":
                assert outcome.get(key) == value, (key, outcome)


# -- the Python client ------------------------------------------------------------------


@pytest.fixture(scope="module")
def replica(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replica]:
    """A replica of the Python client, never synced: only its local checks run."""
    opened = Replica(tmp_path_factory.mktemp("conformance") / "replica.sqlite")
    yield opened
    opened.close()


def python_job(replica: Replica, submit: dict[str, Any]) -> Outcome:
    """What the Python client makes of a new job (Client.submit's local part)."""
    try:
        job_id = replica.insert_job(submit["kind"], submit.get("payload"), submit.get("options"))
    except PayloadTooLarge:
        return {"refused": ErrorCode.PAYLOAD_TOO_LARGE.value}
    except (ErrandsError, ValueError):
        return {"refused": ErrorCode.VALIDATION_ERROR.value}
    job = replica.get(job_id)
    assert job is not None
    return {"accepted": True, "payload": job.payload}


@pytest.mark.parametrize("case", JOBS, ids=_ids)
def test_python_client_jobs(replica: Replica, case: dict[str, Any]) -> None:
    check(python_job(replica, expand(case["submit"])), case["expect"])


@pytest.mark.parametrize("case", OFFSETS, ids=_ids)
def test_python_client_offsets(case: dict[str, Any]) -> None:
    try:
        offset = Offset.decode(case["offset"])
    except ValueError:
        outcome: Outcome = {"refused": ErrorCode.BAD_OFFSET.value}
    else:
        decoded = {
            "generation": offset.generation,
            "xmin": offset.xmin,
            "xmax": offset.xmax,
            "xip": list(offset.xip),
            "after_key": offset.after_key,
        }
        outcome = {"accepted": True, "decoded": decoded}
    check(outcome, case["expect"])


# -- errands.js -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def js_outcomes() -> dict[str, dict[str, Outcome]]:
    """run.mjs's outcomes (model.js's checks in Node), by file and case name."""
    ran = subprocess.run(
        ["node", str(HERE / "run.mjs")], capture_output=True, text=True, timeout=60, check=False
    )
    assert ran.returncode == 0, ran.stderr
    found = json.loads(ran.stdout)
    return {file: {o.pop("name"): o for o in outcomes} for file, outcomes in found.items()}


@pytest.mark.parametrize("case", JOBS, ids=_ids)
def test_errands_js_jobs(js_outcomes: dict[str, dict[str, Outcome]], case: dict[str, Any]) -> None:
    check(js_outcomes["jobs"][case["name"]], case["expect"])


@pytest.mark.parametrize("case", OFFSETS, ids=_ids)
def test_errands_js_offsets(
    js_outcomes: dict[str, dict[str, Outcome]], case: dict[str, Any]
) -> None:
    check(js_outcomes["offsets"][case["name"]], case["expect"])


# -- the service ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def service(server_url: str, template_db: str) -> Iterator[httpx.Client]:
    """``errands server`` on a database of its own, and an HTTP client signed in."""
    database = create_database(server_url, template_db)
    server = SyncServer(database).start()
    token = make_token(SECRET, "conformance")
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    try:
        with httpx.Client(base_url=server.url, headers=headers, timeout=30) as http:
            yield http
    finally:
        server.stop()
        drop_database(server_url, database)


def service_job(http: httpx.Client, submit: dict[str, Any]) -> Outcome:
    """What the service makes of the insert a client would upload for a new job."""
    job_id = str(uuid.uuid4())
    values = {
        "id": job_id,
        "timestamp": datetime.now(UTC).isoformat(),
        "kind": submit["kind"],
        "cancelled": False,
        **(submit.get("options") or {}),
    }
    if submit.get("payload") is not None:  # a client sends no payload as {}
        values["payload"] = submit["payload"]
    mutation = {"id": str(uuid.uuid4()), "table": JOBS_TABLE, "op": "insert", "key": job_id}
    # ASCII JSON, so that a lone surrogate travels as the \\ud800 escape a client sends.
    body = json.dumps({"mutations": [mutation | {"values": values}]})
    response = http.post(f"{PREFIX}/mutations", content=body)
    if response.status_code != 200:
        return {"refused": response.json()["error"]["code"]}
    (result,) = response.json()["results"]
    if result["status"] == "rejected":
        return {"refused": result["code"]}
    return {"accepted": True}


@pytest.mark.parametrize("case", JOBS, ids=_ids)
def test_service_jobs(service: httpx.Client, case: dict[str, Any]) -> None:
    check(service_job(service, expand(case["submit"])), case["expect"], values=False)


@pytest.mark.parametrize("case", OFFSETS, ids=_ids)
def test_service_offsets(service: httpx.Client, case: dict[str, Any]) -> None:
    response = service.get(f"{PREFIX}/shapes/{JOBS_TABLE}", params={"offset": case["offset"]})
    if response.status_code == 400:
        outcome: Outcome = {"refused": response.json()["error"]["code"]}
    else:  # a well-formed offset of another database: must-refetch (409), never a 5xx
        assert response.status_code in {200, 409}, response.text
        outcome = {"accepted": True}
    check(outcome, case["expect"], values=False)


def test_every_vector_file_runs() -> None:
    """A new vector file is picked up here, or this fails."""
    assert sorted(path.stem for path in Path(HERE).glob("*.json")) == ["jobs", "offsets"]
