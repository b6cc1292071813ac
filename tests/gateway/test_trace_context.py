"""A launch continues the sender's W3C trace context or starts a trace, on TriggerLaunched."""

import pytest
from fastapi.testclient import TestClient

from hookrun.config import parse_config
from hookrun.events import TriggerLaunched, tracing
from hookrun.gateway.adapters import FakeDeliveryIndex, FakeEventLog
from hookrun.gateway.app import build
from hookrun.gateway.config import Settings
from tests.gateway.test_launch import BODY, CONFIG, github_sig

SENDER = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture
def log() -> FakeEventLog:
    return FakeEventLog()


@pytest.fixture
def client(log: FakeEventLog):
    app = build(
        Settings(), parse_config(CONFIG, "test.yaml"), event_log=log, deliveries=FakeDeliveryIndex()
    )
    with TestClient(app) as c:
        yield c


def launch(client: TestClient, log: FakeEventLog, **headers: str) -> TriggerLaunched:
    r = client.post(
        "/api/v0/launch/gh/",
        content=BODY,
        headers={"X-Hub-Signature-256": github_sig(BODY), **headers},
    )
    assert r.status_code == 202, r.text
    return [e for e in log.events if isinstance(e, TriggerLaunched)][-1]


def test_the_senders_traceparent_and_tracestate_go_on_the_launch(client, log) -> None:
    event = launch(client, log, traceparent=SENDER, tracestate="vendor=1")
    assert (event.traceparent, event.tracestate) == (SENDER, "vendor=1")


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"traceparent": "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01"},
        {"traceparent": "00-00000000000000000000000000000000-00f067aa0ba902b7-01"},
        {"traceparent": "not a traceparent", "tracestate": "vendor=1"},
    ],
)
def test_a_launch_without_a_valid_traceparent_starts_a_trace_of_its_own(
    client, log, headers: dict[str, str]
) -> None:
    first, second = launch(client, log, **headers), launch(client, log, **headers)
    assert first.trace is not None and second.trace is not None
    assert tracing.parse(first.traceparent) == first.trace
    assert first.tracestate is None  # a tracestate without a valid traceparent is dropped
    assert first.trace.trace_id != second.trace.trace_id
    assert not first.trace.sampled  # nothing records it while spans are off


def test_a_launch_with_a_delivery_id_carries_the_trace_too(client, log) -> None:
    event = launch(client, log, traceparent=SENDER, **{"X-GitHub-Delivery": "d-1"})
    assert event.traceparent == SENDER
