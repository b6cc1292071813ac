"""Run info and the admin API are forwarded to the status service unchanged."""

import httpx
import pytest
from fastapi.testclient import TestClient

from hookrun.config import parse_config
from hookrun.gateway.adapters import FakeDeliveryIndex, FakeEventLog
from hookrun.gateway.app import build
from hookrun.gateway.config import Settings

from .test_launch import CONFIG


@pytest.fixture
def seen():
    return []


def client_for(transport: httpx.AsyncBaseTransport):
    settings = Settings(hookrun_max_body_bytes=1024)
    app = build(
        settings,
        parse_config(CONFIG, "test.yaml"),
        event_log=FakeEventLog(),
        deliveries=FakeDeliveryIndex(),
        status_transport=transport,
    )
    return TestClient(app)


def test_run_info_post_reaches_the_status_service_with_body_query_and_sender(seen):
    def status(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"status": "pending", "result": []})

    with client_for(httpx.MockTransport(status)) as c:
        r = c.post(
            "/api/v0/launch/gh/run/?x=1",
            content=b'{"run_id": "r-1"}',
            headers={"X-Hub-Signature-256": "sig"},
        )
    assert r.status_code == 200
    assert r.json() == {"status": "pending", "result": []}
    [req] = seen
    assert req.method == "POST"
    assert req.url.path == "/api/v0/launch/gh/run/"
    assert req.url.query == b"x=1"
    assert req.content == b'{"run_id": "r-1"}'
    assert req.headers["x-hub-signature-256"] == "sig"
    assert req.headers["x-forwarded-for"] == "testclient"


def test_admin_answers_pass_through_with_their_status_code(seen):
    def status(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(401, json={"error": "missing bearer token"})

    with client_for(httpx.MockTransport(status)) as c:
        r = c.get("/api/v1/runs?trigger_id=gh")
    assert r.status_code == 401
    assert seen[0].url.path == "/api/v1/runs"


def test_status_service_down_answers_503_with_retry_after():
    def status(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    with client_for(httpx.MockTransport(status)) as c:
        r = c.get("/api/v0/launch/gh/run/?run_id=r-1")
    assert r.status_code == 503
    assert r.headers["retry-after"] == "5"


def test_an_oversized_run_info_body_is_refused_before_forwarding(seen):
    def status(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200)

    with client_for(httpx.MockTransport(status)) as c:
        r = c.post("/api/v0/launch/gh/run/", content=b"x" * 2000)
    assert r.status_code == 413
    assert seen == []
