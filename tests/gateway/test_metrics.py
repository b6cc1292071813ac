"""The gateway's launch metrics with fake adapters: by trigger and outcome, labels bounded."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from hookrun.config import parse_config
from hookrun.gateway.adapters import FakeDeliveryIndex, FakeEventLog
from hookrun.gateway.app import build
from hookrun.gateway.config import Settings
from hookrun.gateway.metrics import reason_kind

CONFIG = """
project: {id: p-1, slug: demo, name: Demo}
organization: {id: o-1, slug: acme, title: Acme}
environment: {id: e-1, slug: dev, type: DEVELOPMENT}
steps:
  - name: noop
    command: ["true"]
triggers:
  - id: metered
    title: Static token
    conditions: [{type: static_secret, header: X-Token, secret: tok}]
    actions: [{action: run_execution, step: noop}]
  - id: metered-off
    title: Disabled
    enabled: false
    actions: [{action: run_execution, step: noop}]
"""


def launches(trigger: str, outcome: str, reason: str = "") -> float:
    labels = {"trigger": trigger, "outcome": outcome, "reason": reason}
    return REGISTRY.get_sample_value("hookrun_launches_total", labels) or 0.0


@pytest.fixture
def client_and_log():
    log = FakeEventLog()
    app = build(
        Settings(),
        parse_config(CONFIG, "hookrun.yaml"),
        event_log=log,
        deliveries=FakeDeliveryIndex(),
    )
    with TestClient(app) as client:
        yield client, log


def test_each_outcome_is_counted_under_its_trigger(client_and_log):
    client, log = client_and_log
    before = {
        "accepted": launches("metered", "accepted"),
        "refused": launches("metered", "rejected", "condition_failed"),
        "disabled": launches("metered-off", "rejected", "disabled"),
        "unknown": launches("_unknown", "rejected", "unknown_trigger"),
        "down": launches("metered", "unavailable"),
    }
    assert client.post("/api/v0/launch/metered/", headers={"X-Token": "tok"}).status_code == 202
    assert client.post("/api/v0/launch/metered/", headers={"X-Token": "no"}).status_code == 400
    assert client.post("/api/v0/launch/metered-off/").status_code == 400
    assert client.post("/api/v0/launch/who-knows-1/").status_code == 400
    assert client.post("/api/v0/launch/who-knows-2/").status_code == 400
    log.down = True
    assert client.post("/api/v0/launch/metered/", headers={"X-Token": "tok"}).status_code == 503
    assert launches("metered", "accepted") - before["accepted"] == 1
    assert launches("metered", "rejected", "condition_failed") - before["refused"] == 1
    assert launches("metered-off", "rejected", "disabled") - before["disabled"] == 1
    assert launches("_unknown", "rejected", "unknown_trigger") - before["unknown"] == 2
    assert launches("metered", "unavailable") - before["down"] == 1


def test_an_unknown_trigger_id_never_becomes_a_label(client_and_log):
    client, _ = client_and_log
    client.post("/api/v0/launch/chosen-by-the-sender/")
    scraped = client.get("/metrics")
    assert scraped.status_code == 200
    assert scraped.headers["content-type"].startswith("text/plain")
    assert "chosen-by-the-sender" not in scraped.text
    assert (
        'hookrun_launches_total{outcome="rejected",reason="unknown_trigger",trigger="_unknown"}'
        in scraped.text
    )


def test_metrics_stay_out_of_the_openapi_document(client_and_log):
    client, _ = client_and_log
    assert "/metrics" not in client.get("/openapi.json").json()["paths"]


@pytest.mark.parametrize(
    ("reason", "kind"),
    [
        ("unknown trigger", "unknown_trigger"),
        ("trigger is disabled", "disabled"),
        ("conditions[0] (hmac): signature mismatch", "condition_failed"),
        ("JSON body nests deeper than HOOKRUN_MAX_JSON_DEPTH (64)", "too_deep"),
        ("body too large", "body_too_large"),
        ("something new", "other"),
    ],
)
def test_a_reason_is_counted_by_its_kind(reason, kind):
    assert reason_kind(reason) == kind
