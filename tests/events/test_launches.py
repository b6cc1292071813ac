"""TriggerLaunched written straight to bytes is byte for byte what encode(TriggerLaunched(...)) writes."""

import base64
from datetime import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hookrun.events import TriggerLaunched, UnrecordableEvent, decode, encode, new_id
from hookrun.events.codec import MAX_RECORD_BYTES
from hookrun.events.launches import launched_record

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
        account_metadata=f.get("account_metadata"),
    )
    return encode(event, source=f["source"])


def test_a_plain_launch_is_the_same_record():
    f = fields()
    record = launched_record(**f)
    assert record == the_model_encoded(record, f)


def test_optional_fields_set_are_the_same_record():
    f = fields(
        delivery_id="d-1",
        is_test=True,
        account="acct",
        account_metadata={"iss": "https://idp.example", "exp": 1796531040, "roles": ["ci"]},
        remote_addr=None,
        headers={},
    )
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


def test_a_body_no_record_could_hold_is_unrecordable_as_with_encode():
    with pytest.raises(UnrecordableEvent, match="over the"):
        launched_record(**fields(body=b"x" * MAX_RECORD_BYTES))
