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


def fuzz(operation: APIOperation, base_url: str) -> None:
    """Send generated requests to one operation; none may get a 5xx."""
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
            if response.status_code >= 400:
                assert set(response.json()) in ({"error"}, {"messages", "offset"})

    check()


def test_no_input_makes_the_service_fail(start_server: StartServer) -> None:
    # A short hold so that generated live reads return at once.
    service = start_server("--live-hold", "0.05", "--poll-interval", "0.05")
    schema = schemathesis.openapi.from_url(f"{service.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 9  # 5 of the sync protocol, 4 of the console (/v1/admin)
    for operation in operations:
        fuzz(operation, service.url)
