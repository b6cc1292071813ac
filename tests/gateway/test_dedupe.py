"""One run per delivery id at one gateway: copies in flight together, verified dedupe keys."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import itertools
import time
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient
from standardwebhooks import Webhook

from hookrun.config import InboundRequest, parse_config
from hookrun.events import InboundDeliveryRecorded, Record, TriggerLaunched, TriggerLogged
from hookrun.events.kafka import KafkaUnavailable
from hookrun.gateway.adapters import FakeDeliveryIndex, FakeEventLog
from hookrun.gateway.app import build
from hookrun.gateway.config import Settings
from hookrun.gateway.handlers import Deps, launch

WHSEC = "whsec_" + base64.b64encode(b"w" * 24).decode()
CONFIG = f"""
project: {{id: p-1, slug: demo, name: Demo}}
organization: {{id: o-1, slug: acme, title: Acme}}
environment: {{id: e-1, slug: dev, type: DEVELOPMENT}}
steps:
  - {{name: noop, command: ["true"]}}
triggers:
  - id: gh
    title: GitHub
    conditions: [{{preset: github, secret: gh-secret}}]
    actions: [{{action: run_execution, step: noop}}]
  - id: sw
    title: Standard Webhooks, not the preset
    conditions: [{{type: standard_webhooks, secret: "{WHSEC}"}}]
    actions: [{{action: run_execution, step: noop}}]
  - id: stripe
    title: Stripe
    conditions: [{{type: stripe, secret: sk}}]
    actions: [{{action: run_execution, step: noop}}]
"""
BODY = b'{"n": 1}'


def github(delivery: str) -> dict[str, str]:
    digest = hmac.new(b"gh-secret", BODY, hashlib.sha256).hexdigest()
    return {"X-Hub-Signature-256": f"sha256={digest}", "X-GitHub-Delivery": delivery}


class SlowLog(FakeEventLog):
    """A Fake event log whose appends take a while, as Kafka's acknowledgements do."""

    def __init__(self, delay_s: float = 0.05) -> None:
        super().__init__()
        self.delay_s = delay_s

    async def append_together(self, records: Sequence[Record]) -> None:
        await asyncio.sleep(self.delay_s)
        await super().append_together(records)

    async def append_records(self, records: Sequence[Record]) -> None:
        await asyncio.sleep(self.delay_s)
        await super().append_records(records)


def deps_with(log: FakeEventLog) -> Deps:
    ids = (f"run-{n}" for n in itertools.count(1))
    config = parse_config(CONFIG, "t.yaml")
    return Deps(config=config, log=log, deliveries=FakeDeliveryIndex(), new_run_id=ids.__next__)


def request(headers: dict[str, str]) -> InboundRequest:
    return InboundRequest("POST", "/api/v0/launch/gh/", headers, body=BODY, remote_addr="10.0.0.1")


def launched(log: FakeEventLog) -> list[TriggerLaunched]:
    return [e for e in log.events if isinstance(e, TriggerLaunched)]


async def test_copies_of_one_delivery_in_flight_together_start_one_run_and_answer_its_id():
    log = SlowLog()
    deps = deps_with(log)
    replies = await asyncio.gather(*(launch("gh", request(github("d-1")), deps) for _ in range(5)))
    assert [r.status for r in replies] == [202] * 5
    assert len({r.body for r in replies}) == 1
    [event] = launched(log)
    assert event.delivery_id == "d-1"
    duplicates = [e for e in log.events if isinstance(e, TriggerLogged)]
    assert [e.outcome for e in duplicates] == ["duplicate"] * 4
    assert {e.run_id for e in duplicates} == {event.run_id}
    assert deps.inflight == {}


async def test_a_copy_waiting_on_a_first_that_kafka_refused_gets_503_and_starts_nothing():
    class RefusingLog(SlowLog):
        async def append_together(self, records: Sequence[Record]) -> None:
            await asyncio.sleep(self.delay_s)
            raise KafkaUnavailable("no acknowledgement")

    log = RefusingLog()
    deps = deps_with(log)
    replies = await asyncio.gather(*(launch("gh", request(github("d-2")), deps) for _ in range(3)))
    assert [r.status for r in replies] == [503] * 3
    assert all(r.headers["Retry-After"] == "5" for r in replies)
    assert log.events == []
    assert deps.inflight == {}


async def test_different_deliveries_in_flight_together_start_a_run_each():
    log = SlowLog()
    deps = deps_with(log)
    replies = await asyncio.gather(
        *(launch("gh", request(github(f"d-{n}")), deps) for n in range(3))
    )
    assert [r.status for r in replies] == [202] * 3
    assert len(launched(log)) == 3


async def test_the_launch_and_its_dedupe_record_are_appended_together():
    appended: list[list[str]] = []

    class Recording(FakeEventLog):
        async def append_together(self, records: Sequence[Record]) -> None:
            appended.append([r.topic for r in records])
            await super().append_together(records)

    log = Recording()
    await launch("gh", request(github("d-3")), deps_with(log))
    assert appended == [["hookrun.runs", "hookrun.inbound-deliveries"]]
    assert [type(e) for e in log.events] == [TriggerLaunched, InboundDeliveryRecorded]


@pytest.fixture
def client():
    log = FakeEventLog()
    app = build(
        Settings(), parse_config(CONFIG, "t.yaml"), event_log=log, deliveries=FakeDeliveryIndex()
    )
    with TestClient(app) as c:
        yield c, log


def test_a_replayed_standard_webhook_with_an_unsigned_delivery_header_gets_the_first_run(client):
    c, log = client
    now = datetime.now(UTC)
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(WHSEC).sign("msg_1", now, BODY.decode()),
    }
    first = c.post("/api/v0/launch/sw/", content=BODY, headers=headers)
    again = c.post(
        "/api/v0/launch/sw/", content=BODY, headers=headers | {"X-GitHub-Delivery": "forged"}
    )
    assert first.status_code == again.status_code == 202
    assert first.json() == again.json()
    [event] = launched(log)
    assert event.delivery_id == "msg_1"


def test_a_stripe_event_dedupes_by_its_signed_id_whatever_the_headers_say(client):
    c, log = client
    body = b'{"id": "evt_7", "type": "invoice.paid"}'
    at = int(time.time())
    digest = hmac.new(b"sk", f"{at}.".encode() + body, hashlib.sha256).hexdigest()
    signed = {"Stripe-Signature": f"t={at},v1={digest}"}
    for extra in ({}, {"Idempotency-Key": "k-1"}, {"X-GitHub-Delivery": "g-1"}):
        r = c.post("/api/v0/launch/stripe/", content=body, headers=signed | extra)
        assert r.status_code == 202
    [event] = launched(log)
    assert event.delivery_id == "evt_7"


def test_the_delivery_index_forgets_deliveries_past_the_window(monkeypatch):
    # Deliveries arrive from the topic (every instance's, this one's echoes included), not
    # only through remember(): both must leave expired ones behind.
    from datetime import UTC, datetime

    from hookrun.events import InboundDeliveryRecorded
    from hookrun.gateway import adapters

    now = [1_000_000.0]
    monkeypatch.setattr(adapters.time, "time", lambda: now[0])
    index = adapters.KafkaDeliveryIndex("127.0.0.1:9", window_s=3600)

    def arrive(n: int) -> None:
        at = datetime.fromtimestamp(now[0], UTC)
        for i in range(n):
            index._apply(
                InboundDeliveryRecorded(
                    trigger_id="gh", delivery_id=f"{now[0]}-{i}", run_id="r", occurred_at=at
                )
            )

    for _ in range(5):  # five windows' worth of deliveries, 12,000 each
        arrive(12_000)
        now[0] += 3601
    assert len(index._runs) <= 12_000 + 10_000
