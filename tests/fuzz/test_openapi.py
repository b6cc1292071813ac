"""schemathesis against the gateway's and the status service's OpenAPI documents (ASGI, in-process).

In-process apps with the Fake adapters rather than real processes: thousands of cases run in
seconds, the store and the forwarding target are deterministic, and a 5xx comes with its Python
traceback. The real processes are covered by tests/e2e. Checks: never a 5xx, and where a response
is declared, its status code, content type and schema.
"""

from __future__ import annotations

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import given

from hookrun.config import parse_config
from hookrun.events import RunStatus
from hookrun.gateway.adapters import FakeDeliveryIndex, FakeEventLog
from hookrun.gateway.app import build as build_gateway
from hookrun.gateway.config import Settings as GatewaySettings
from hookrun.status.adapters import FakeLogEnds
from hookrun.status.app import build as build_status
from hookrun.status.config import Settings as StatusSettings
from hookrun.status.sqlite import SqliteStore
from tests.fuzz.strategies import CONFIG, SIGNABLE, fuzz
from tests.status.conftest import Feeder
from tests.status.factories import launched, run_events

schemathesis = pytest.importorskip("schemathesis", reason="dev dependency schemathesis")
from schemathesis import checks  # noqa: E402
from schemathesis.specs.openapi import checks as openapi_checks  # noqa: E402

ADMIN = "fuzz-admin-token"
#: Cases per API operation (4 gateway operations, 11 status operations).
EXAMPLES = 150
CHECKS = [
    checks.not_a_server_error,
    openapi_checks.status_code_conformance,
    openapi_checks.content_type_conformance,
    openapi_checks.response_schema_conformance,
]


@pytest.fixture(scope="module")
def gateway_schema():
    def status(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json={"error": "run not found"})

    app = build_gateway(
        GatewaySettings(hookrun_max_body_bytes=4096),
        parse_config(CONFIG, "fuzz.yaml"),
        event_log=FakeEventLog(),
        deliveries=FakeDeliveryIndex(),
        status_transport=httpx.MockTransport(status),
    )
    with TestClient(app):  # runs the lifespan once: app.state holds the status client
        yield schemathesis.openapi.from_asgi("/openapi.json", app)


@pytest.fixture(scope="module")
def status_schema(tmp_path_factory):
    store = SqliteStore(tmp_path_factory.mktemp("openapi-status") / "status.db")
    settings = StatusSettings(hookrun_admin_token=ADMIN, hookrun_status_catch_up_timeout_s=0.1)
    app = build_status(
        settings,
        parse_config(CONFIG, "fuzz.yaml"),
        store=store,
        event_log=FakeEventLog(),
        ends=FakeLogEnds(),
    )
    # The live run feed ends after its first line instead of following the store for ever.
    app.state.closing = lambda: True
    with TestClient(app) as client:
        feed = Feeder(store)
        for trigger_id in SIGNABLE:
            run = launched(trigger_id)
            client.portal.call(feed, [run, *run_events(run, [RunStatus.SUCCESS], deliveries=2)])
        yield schemathesis.openapi.from_asgi("/openapi.json", app)


def _check_every_operation(schema, checks=CHECKS, **call: object) -> int:
    """Run EXAMPLES cases per operation through the CHECKS; return how many operations."""
    operations = [result.ok() for result in schema.get_all_operations()]
    for operation in operations:

        @fuzz(EXAMPLES)
        @given(case=operation.as_strategy())
        def check(case) -> None:
            case.call_and_validate(checks=checks, **call)

        check()
    return len(operations)


def test_gateway_conforms_to_its_openapi_document(gateway_schema):
    assert _check_every_operation(gateway_schema) >= 3


def test_status_conforms_to_its_openapi_document(status_schema):
    # with the admin token, so that the admin operations get past the guard
    auth = {"Authorization": f"Bearer {ADMIN}"}
    assert _check_every_operation(status_schema, headers=auth) >= 10
    paths = {result.ok().path for result in status_schema.get_all_operations()}
    assert "/api/v1/runs/{run_id}/replay" in paths


def test_the_status_document_describes_the_schedule_operations(status_schema):
    paths = status_schema.raw_schema["paths"]
    assert set(paths["/api/v1/schedules"]) == {"get"}
    assert set(paths["/api/v1/schedules/{trigger_id}"]) == {"get"}
    assert set(paths["/api/v1/schedules/{trigger_id}/pause"]) == {"post"}
    assert set(paths["/api/v1/schedules/{trigger_id}/resume"]) == {"post"}
