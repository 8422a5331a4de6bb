"""Schemathesis fuzzes the service from its own OpenAPI document: no input makes it fail
with a 5xx, and every refusal has the error shape. Kept small (a few dozen cases per
operation) so that it runs in well under a minute."""

from __future__ import annotations

import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import Case
from schemathesis.schemas import APIOperation

from errands.sync.auth import make_token
from tests.sync.conftest import SECRET, StartServer

CASES_PER_OPERATION = 100


def fuzz(operation: APIOperation, base_url: str, documented: set[str]) -> None:
    """Send generated requests to one operation; none may get a 5xx, and every status
    is one the OpenAPI document lists for it."""
    operator = operation.path.endswith("stats") or operation.path.startswith("/v1/admin/")
    token = make_token(SECRET, "fuzzer", operator=operator)

    @settings(
        max_examples=CASES_PER_OPERATION,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy())
    def check(case: Case) -> None:
        request = case.as_transport_kwargs(
            base_url=base_url, headers={"Authorization": f"Bearer {token}"}
        )
        # Streamed: the event stream never ends by itself; its status is enough.
        with requests.request(**request, stream=True, timeout=30) as response:
            assert response.status_code < 500, case.as_curl_command()
            assert str(response.status_code) in documented, case.as_curl_command()
            if response.status_code >= 400:
                assert set(response.json()) in ({"error"}, {"messages", "offset"})

    check()


def test_no_input_makes_the_service_fail(start_server: StartServer) -> None:
    # A short hold so that generated live reads return at once.
    service = start_server("--live-hold", "0.05", "--poll-interval", "0.05")
    schema = schemathesis.openapi.from_url(f"{service.url}/openapi.json")
    paths = requests.get(f"{service.url}/openapi.json", timeout=30).json()["paths"]
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 16  # 5 of the sync protocol, 11 of the console (/v1/admin)
    for operation in operations:
        documented = set(paths[operation.path][operation.method.lower()]["responses"])
        fuzz(operation, service.url, documented)


# The refusals of issue 8, each documented where it can happen.
DOCUMENTED = {
    ("/v1/mutations", "post"): {"401", "408", "409", "413", "431"},
    ("/v1/shapes/{table}", "get"): {"401", "409", "429", "431"},
    ("/v1/shapes/{table}/stream", "get"): {"401", "409", "429", "431"},
    ("/v1/me", "get"): {"401", "431"},
}


def test_the_openapi_document_lists_every_refusal(start_server: StartServer) -> None:
    service = start_server()
    paths = requests.get(f"{service.url}/openapi.json", timeout=30).json()["paths"]
    for (path, method), statuses in DOCUMENTED.items():
        listed = set(paths[path][method]["responses"])
        assert statuses <= listed, (path, method, statuses - listed)
    retry_after = paths["/v1/shapes/{table}"]["get"]["responses"]["429"]["headers"]
    assert "Retry-After" in retry_after
