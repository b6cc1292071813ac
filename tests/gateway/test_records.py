"""TriggerLaunched written straight to bytes is byte for byte what encode(TriggerLaunched(...)) writes."""

import asyncio
import base64
from datetime import datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from hookrun.config import InboundRequest, parse_config
from hookrun.config.conditions import recorded_request
from hookrun.events import TriggerLaunched, decode, encode
from hookrun.gateway.adapters import FakeDeliveryIndex, FakeEventLog
from hookrun.gateway.handlers import Deps, launch, new_id
from hookrun.gateway.records import launched_record

from .test_launch import CONFIG

# Any text a request can carry (ASGI header values are latin-1, paths and queries are decoded
# with replacement characters), control characters and non-ASCII included; no lone surrogates.
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)
PAIRS = st.dictionaries(TEXT, TEXT, max_size=5)


def fields(**overrides):
    base = {
        "event_id": new_id(),
        "source": "hookrun/gateway/host",
        "run_id": new_id(),
        "trigger_id": "gh",
        "config_version": "abc123",
        "method": "POST",
        "path": "/api/v0/launch/gh/",
        "query": {},
        "headers": {"content-type": "application/json", "x-hub-signature-256": "sha256=00"},
        "remote_addr": "127.0.0.1",
        "body": b'{"a": 1}',
    }
    return {**base, **overrides}


def the_model_encoded(record, f):
    """encode() of the TriggerLaunched with the record's fields and time."""
    moment = datetime.fromisoformat(dict(record.headers)["ce_time"].decode().replace("Z", "+00:00"))
    event = TriggerLaunched(
        event_id=f["event_id"],
        occurred_at=moment,
        run_id=f["run_id"],
        trigger_id=f["trigger_id"],
        config_version=f["config_version"],
        request={
            "method": f["method"],
            "path": f["path"],
            "query": f["query"],
            "headers": f["headers"],
            "content_type": f["headers"].get("content-type"),
            "remote_addr": f["remote_addr"],
            "body_b64": base64.b64encode(f["body"]).decode(),
        },
        delivery_id=f.get("delivery_id"),
        is_test=f.get("is_test", False),
        account=f.get("account"),
    )
    return encode(event, source=f["source"])


def test_a_plain_launch_is_the_same_record():
    f = fields()
    record = launched_record(**f)
    assert record == the_model_encoded(record, f)


def test_optional_fields_set_are_the_same_record():
    f = fields(delivery_id="d-1", is_test=True, account="acct", remote_addr=None, headers={})
    record = launched_record(**f)
    assert record == the_model_encoded(record, f)


@settings(max_examples=300, deadline=None)
@given(
    path=TEXT,
    query=PAIRS,
    headers=PAIRS,
    remote_addr=st.none() | TEXT,
    body=st.binary(max_size=200),
    delivery=st.none() | TEXT,
    account=st.none() | TEXT,
    is_test=st.booleans(),
)
def test_any_request_is_the_same_record(
    path, query, headers, remote_addr, body, delivery, account, is_test
):
    f = fields(
        path=path,
        query=query,
        headers=headers,
        remote_addr=remote_addr,
        body=body,
        delivery_id=delivery,
        account=account,
        is_test=is_test,
    )
    record = launched_record(**f)
    assert record == the_model_encoded(record, f)
    assert decode(record.value, record.headers).request.body() == body


def test_the_launch_rules_record_the_redacted_request_as_recorded_request_does():
    config = parse_config(CONFIG, "t.yaml")
    log = FakeEventLog()
    deps = Deps(config=config, log=log, deliveries=FakeDeliveryIndex(), source="hookrun/gw/x")
    request = InboundRequest(
        method="POST",
        path="/api/v0/launch/token/",
        headers={"X-Token": "tok", "Authorization": "Bearer b", "Content-Type": "text/plain"},
        query={"a": "é"},
        body=b"\x00\xffbody",
        remote_addr="10.0.0.1",
    )
    reply = asyncio.run(launch("token", request, deps))
    assert reply.status == 202
    [event] = log.events
    assert isinstance(event, TriggerLaunched)
    assert event.source == "hookrun/gw/x"
    assert event.config_version == config.config_version
    assert event.request == recorded_request(config.triggers[1], request)
    assert event.request.headers["x-token"] == "[redacted]"
    assert event.request.content_type == "text/plain"
