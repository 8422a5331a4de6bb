"""One rule set, every client: the vectors of tests/conformance/ (README.md) run against
the Python client, errands.js in Node, and the sync service over real HTTP. Each case
is a test per implementation, so a rule changed in one place and not the others fails
by name."""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.types.json import Jsonb

from errands.client.replica import Replica
from errands.client.sync import Refused, SyncSession
from errands.exceptions import ErrandsError, ServerUnreachable, Unauthorized
from errands.payloads import PayloadTooLarge
from errands.protocol import (
    JOBS_TABLE,
    PREFIX,
    ErrorCode,
    Offset,
    QuestionClosed,
    ShapeResponse,
    UpsertMessage,
    rules,
)
from errands.sync.auth import make_token
from tests.client.processes import SECRET, SyncServer
from tests.conformance.vectors import HERE, cases, expand
from tests.conftest import create_database, drop_database

Outcome = dict[str, Any]
JOBS = cases("jobs")
DEPENDENCIES = cases("dependencies")
GRAPHS = cases("dependencies", "graphs")
OFFSETS = cases("offsets")
ANSWERS = cases("answers")
FILTERS = cases("filters")
EXCHANGES = cases("exchanges")
QUESTIONS = cases("questions")


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


def python_dependencies(replica: Replica, case: dict[str, Any]) -> Outcome:
    """What the Python client's insert carries for a job after ``case['after']``."""
    options = {"after": case.get("after"), "on_failure": case.get("on_failure")}
    try:
        job_id = replica.insert_job("k", None, options)
    except ValueError:
        return {"refused": ErrorCode.VALIDATION_ERROR.value}
    (values,) = [m.values for m in replica.pending_mutations(10_000) if m.key == job_id]
    return {"accepted": True, "after": values.get("after", [])}


@pytest.mark.parametrize("case", DEPENDENCIES, ids=_ids)
def test_python_client_dependencies(replica: Replica, case: dict[str, Any]) -> None:
    check(python_dependencies(replica, expand(case)), case["expect"])


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


def python_action(replica: Replica, status: int, code: str | None) -> str:
    """What the Python client's sync session does with an error answer."""
    if code is not None:
        body = json.dumps({"error": {"code": code, "message": "a message"}})
    elif status == 409:
        body = json.dumps({"messages": [{"type": "must-refetch"}], "offset": "-1"})
    else:
        body = "<html>a proxy's page</html>"

    def answer(_: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=body.encode())

    async def call() -> str:
        transport = httpx.MockTransport(answer)
        async with httpx.AsyncClient(transport=transport, base_url="http://errands") as http:
            try:
                await SyncSession(replica, http)._call("GET", f"{PREFIX}/me")
            except Unauthorized:
                return "unauthorized"
            except Refused:
                return "refused"
            except ServerUnreachable:
                return "retry"
            except ErrandsError as error:  # the session's own must-refetch signal
                return "must_refetch" if type(error).__name__ == "_MustRefetch" else repr(error)
        raise AssertionError("an error answer was taken as a success")

    return asyncio.run(call())


@pytest.mark.parametrize("case", ANSWERS, ids=_ids)
def test_python_client_answers(replica: Replica, case: dict[str, Any]) -> None:
    action = python_action(replica, case["status"], case["code"])
    assert action == case["expect"]["action"]


@pytest.mark.parametrize("case", EXCHANGES, ids=_ids)
def test_python_client_exchanges(replica: Replica, case: dict[str, Any]) -> None:
    expect = case["expect"]
    assert python_action(replica, expect["status"], expect["code"]) == expect["action"]


def python_answer(replica: Replica, case: dict[str, Any]) -> Outcome:
    """What the Python client makes of an answer (Client.answer's local part) to a job
    synced with the case's state, question and answer."""
    job_id = str(uuid.uuid4())
    row = {
        "id": job_id,
        "timestamp": datetime.now(UTC).isoformat(),
        "kind": "charge",
        "payload": {},
        "cancelled": False,
        "completed": False,
        "progress": 0.0,
        **case["job"],
    }
    offset = Offset("conformance", 1, 1).encode()
    response = ShapeResponse(messages=[UpsertMessage(key=job_id, row=row)], offset=offset)
    assert replica.apply(response, replica.offset())
    try:
        job = replica.answer(job_id, expand(case["value"]))
    except QuestionClosed:
        return {"refused": ErrorCode.QUESTION_CLOSED.value}
    except (ErrandsError, ValueError):
        return {"refused": ErrorCode.VALIDATION_ERROR.value}
    assert not job.asking
    return {"accepted": True}


@pytest.mark.parametrize("case", QUESTIONS, ids=_ids)
def test_python_client_questions(replica: Replica, case: dict[str, Any]) -> None:
    check(python_answer(replica, case), case["expect"])


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


@pytest.mark.parametrize("case", DEPENDENCIES, ids=_ids)
def test_errands_js_dependencies(
    js_outcomes: dict[str, dict[str, Outcome]], case: dict[str, Any]
) -> None:
    check(js_outcomes["dependencies"][case["name"]], case["expect"])


@pytest.mark.parametrize("case", OFFSETS, ids=_ids)
def test_errands_js_offsets(
    js_outcomes: dict[str, dict[str, Outcome]], case: dict[str, Any]
) -> None:
    check(js_outcomes["offsets"][case["name"]], case["expect"])


@pytest.mark.parametrize("case", ANSWERS, ids=_ids)
def test_errands_js_answers(
    js_outcomes: dict[str, dict[str, Outcome]], case: dict[str, Any]
) -> None:
    assert js_outcomes["answers"][case["name"]]["action"] == case["expect"]["action"]


@pytest.mark.parametrize("case", EXCHANGES, ids=_ids)
def test_errands_js_exchanges(
    js_outcomes: dict[str, dict[str, Outcome]], case: dict[str, Any]
) -> None:
    assert js_outcomes["exchanges"][case["name"]]["action"] == case["expect"]["action"]


@pytest.mark.parametrize("case", QUESTIONS, ids=_ids)
def test_errands_js_questions(
    js_outcomes: dict[str, dict[str, Outcome]], case: dict[str, Any]
) -> None:
    check(js_outcomes["questions"][case["name"]], case["expect"])


# -- the service ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def service_database(server_url: str, template_db: str) -> Iterator[str]:
    """The service's database."""
    database = create_database(server_url, template_db)
    yield database
    drop_database(server_url, database)


@pytest.fixture(scope="module")
def service(service_database: str) -> Iterator[httpx.Client]:
    """``errands server`` on a database of its own, and an HTTP client signed in. Every
    kind is open to clients (``ERRANDS_CLIENT_KINDS=*``, where the service knows it): the
    vectors test the rules every client shares, not which kinds a deployment offers."""
    database = service_database
    with pytest.MonkeyPatch.context() as env:
        env.setenv("ERRANDS_CLIENT_KINDS", "*")
        server = SyncServer(database).start()
    token = make_token(SECRET, "conformance")
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    try:
        with httpx.Client(base_url=server.url, headers=headers, timeout=30) as http:
            yield http
    finally:
        server.stop()


@pytest.fixture(scope="module")
def other_user(service: httpx.Client) -> Iterator[httpx.Client]:
    """Another user of the same service."""
    token = make_token(SECRET, "someone-else")
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    with httpx.Client(base_url=str(service.base_url), headers=headers, timeout=30) as http:
        yield http


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


def _insert(job_id: str, **values: Any) -> dict[str, Any]:
    """A client's insert of a new job ``job_id``."""
    values = {"id": job_id, "timestamp": datetime.now(UTC).isoformat(), "kind": "k"} | values
    return {"id": str(uuid.uuid4()), "table": JOBS_TABLE, "op": "insert", "key": job_id} | {
        "values": {k: v for k, v in values.items() if v is not None}
    }


def _upload(http: httpx.Client, *inserts: dict[str, Any]) -> list[dict[str, Any]]:
    response = http.post(f"{PREFIX}/mutations", content=json.dumps({"mutations": list(inserts)}))
    assert response.status_code == 200, response.text
    return list(response.json()["results"])


def _outcome(result: dict[str, Any]) -> str:
    return "applied" if result["status"] == "applied" else str(result["code"])


@pytest.mark.parametrize("case", DEPENDENCIES, ids=_ids)
def test_service_dependencies(service: httpx.Client, case: dict[str, Any]) -> None:
    """The jobs named come earlier in the same upload (when they are ids at all)."""
    case = expand(case)
    after = case.get("after")
    named = after if isinstance(after, list) else []
    ids = {i.lower() for i in named if isinstance(i, str) and _is_uuid(i)}
    # Jobs of earlier cases may have these ids already: they are the caller's all the same.
    earlier = [_insert(job_id) for job_id in sorted(ids)]
    job = _insert(str(uuid.uuid4()), after=after, on_failure=case.get("on_failure"))
    result = _upload(service, *earlier, job)[-1]
    outcome: Outcome = {"refused": result["code"]} if result["status"] == "rejected" else {}
    check(outcome or {"accepted": True}, case["expect"], values=False)


def _is_uuid(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text.lower()
    except ValueError:
        return False


@pytest.mark.parametrize("case", GRAPHS, ids=_ids)
def test_service_dependency_graphs(
    service: httpx.Client, other_user: httpx.Client, case: dict[str, Any]
) -> None:
    letters = {job["job"] for job in case["upload"]} | set(case.get("earlier", []))
    letters |= {a for job in case["upload"] for a in job.get("after", [])}
    letters |= set(case.get("others", []))
    ids = {letter: str(uuid.uuid4()) for letter in letters}
    for user, named in ((other_user, case.get("others", [])), (service, case.get("earlier", []))):
        if named:
            assert {_outcome(r) for r in _upload(user, *(_insert(ids[n]) for n in named))} == {
                "applied"
            }
    inserts = [
        _insert(ids[job["job"]], kind=job.get("kind"), after=[ids[a] for a in job.get("after", [])])
        for job in case["upload"]
    ]
    assert [_outcome(r) for r in _upload(service, *inserts)] == case["expect"]


@pytest.mark.parametrize("case", OFFSETS, ids=_ids)
def test_service_offsets(service: httpx.Client, case: dict[str, Any]) -> None:
    response = service.get(f"{PREFIX}/shapes/{JOBS_TABLE}", params={"offset": case["offset"]})
    if response.status_code == 400:
        outcome: Outcome = {"refused": response.json()["error"]["code"]}
    else:  # a well-formed offset of another database: must-refetch (409), never a 5xx
        assert response.status_code in {200, 409}, response.text
        outcome = {"accepted": True}
    check(outcome, case["expect"], values=False)


@pytest.mark.parametrize("case", FILTERS, ids=_ids)
def test_service_filters(service: httpx.Client, case: dict[str, Any]) -> None:
    where = json.dumps(expand(case["where"]))  # ASCII: a NUL travels as \u0000
    answer = service.get(f"{PREFIX}/shapes/{JOBS_TABLE}", params={"offset": "-1", "where": where})
    if answer.status_code == 200:
        outcome: Outcome = {"accepted": True}
    else:
        assert answer.status_code == 400, answer.text  # never a 5xx
        outcome = {"refused": answer.json()["error"]["code"]}
    check(outcome, case["expect"], values=False)


def test_every_exported_operator_and_no_other_is_a_filter_vector() -> None:
    """A filter operator added to the protocol needs a vector the service accepts."""
    accepted = {f["op"] for case in FILTERS if "accepted" in case["expect"] for f in case["where"]}
    assert accepted == set(rules()["filter_ops"])


def _jsonb(value: Any) -> Jsonb | None:
    return None if value is None else Jsonb(value)  # SQL NULL, not JSON null


def service_answer(http: httpx.Client, database: str, case: dict[str, Any]) -> Outcome:
    """What the service makes of the update a client would upload for the answer, to a
    job of the caller's in the case's state, with its question and answer."""
    job_id = str(uuid.uuid4())
    job = case["job"]
    waits = job["question"] is not None and job["answer"] is None  # as ctx.ask leaves it
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO background_jobs (id, kind, owner, state, question, answer, waiting_for)"
            " VALUES (%s, 'charge', 'conformance', %s, %s, %s, %s)",
            (job_id, job["state"], _jsonb(job["question"]), _jsonb(job["answer"]), int(waits)),
        )
    values = {"answer": expand(case["value"])}
    mutation = {"id": str(uuid.uuid4()), "table": JOBS_TABLE, "op": "update", "key": job_id}
    body = json.dumps({"mutations": [mutation | {"values": values}]})
    response = http.post(f"{PREFIX}/mutations", content=body)
    if response.status_code != 200:
        return {"refused": response.json()["error"]["code"]}
    (result,) = response.json()["results"]
    if result["status"] == "rejected":
        return {"refused": result["code"]}
    return {"accepted": True}


@pytest.mark.parametrize("case", QUESTIONS, ids=_ids)
def test_service_questions(
    service: httpx.Client, service_database: str, case: dict[str, Any]
) -> None:
    check(service_answer(service, service_database, case), case["expect"], values=False)


def _reused_id(http: httpx.Client) -> httpx.Response:
    mutation_id = str(uuid.uuid4())
    responses = []
    for _ in range(2):  # the same id, each time for another new job
        job = str(uuid.uuid4())
        values = {"id": job, "timestamp": datetime.now(UTC).isoformat(), "kind": "k"}
        mutation = {"id": mutation_id, "table": JOBS_TABLE, "op": "insert", "key": job}
        body = {"mutations": [mutation | {"values": values}]}
        responses.append(http.post(f"{PREFIX}/mutations", content=json.dumps(body)))
    assert responses[0].status_code == 200, responses[0].text
    return responses[1]


def _other_generation(http: httpx.Client) -> httpx.Response:
    offset = Offset.decode(
        http.get(f"{PREFIX}/shapes/{JOBS_TABLE}", params={"offset": "-1"}).json()["offset"]
    )
    elsewhere = Offset("othergeneration", offset.xmin, offset.xmax, offset.xip).encode()
    return http.get(f"{PREFIX}/shapes/{JOBS_TABLE}", params={"offset": elsewhere})


def _with_token(token: str) -> Callable[[httpx.Client], httpx.Response]:
    def call(http: httpx.Client) -> httpx.Response:
        return http.get(f"{PREFIX}/me", headers={"Authorization": f"Bearer {token}"})

    return call


SCENARIOS: dict[str, Callable[[httpx.Client], httpx.Response]] = {
    "a mutation id reused for another change": _reused_id,
    "an offset of another database generation": _other_generation,
    "a malformed offset": lambda http: http.get(
        f"{PREFIX}/shapes/{JOBS_TABLE}", params={"offset": "g_3_2_"}
    ),
    "an expired token": _with_token(make_token(SECRET, "conformance", expires_in=-60)),
    "a token signed with another secret": _with_token(make_token("x" * 32, "conformance")),
    "a where that is not JSON": lambda http: http.get(
        f"{PREFIX}/shapes/{JOBS_TABLE}", params={"offset": "-1", "where": "[{"}
    ),
    "a batch with no mutations": lambda http: http.post(
        f"{PREFIX}/mutations", content=json.dumps({"mutations": []})
    ),
}
"""How to bring about each situation of exchanges.json, over real HTTP."""


@pytest.mark.parametrize("case", EXCHANGES, ids=_ids)
def test_service_exchanges(service: httpx.Client, case: dict[str, Any]) -> None:
    answer = SCENARIOS[case["name"]](service)
    body = answer.json()
    code = body["error"]["code"] if "error" in body else None
    assert (answer.status_code, code) == (case["expect"]["status"], case["expect"]["code"])
    if code is None:  # must-refetch: a shape response that says so
        assert [m["type"] for m in body["messages"]] == ["must-refetch"]


def test_every_vector_file_runs() -> None:
    """A new vector file is picked up here, or this fails."""
    found = sorted(path.stem for path in Path(HERE).glob("*.json"))
    assert found == [
        "answers",
        "dependencies",
        "exchanges",
        "filters",
        "jobs",
        "offsets",
        "questions",
    ]
    assert set(SCENARIOS) == {case["name"] for case in EXCHANGES}
