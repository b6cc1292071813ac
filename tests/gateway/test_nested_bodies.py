"""Bodies nested deeper than HOOKRUN_MAX_JSON_DEPTH are refused before anything is appended."""

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from hookrun.config import parse_config
from hookrun.events import TriggerLaunched, TriggerLogged
from hookrun.gateway.adapters import FakeDeliveryIndex, FakeEventLog
from hookrun.gateway.app import build
from hookrun.gateway.config import Settings
from tests.gateway.test_launch import CONFIG, github_sig


def nested(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


def in_turn(depth: int) -> bytes:
    """An array, an object, an array... ``depth`` levels deep."""
    opens = [b'{"a":' if level % 2 else b"[" for level in range(depth)]
    closes = [b"}" if level % 2 else b"]" for level in reversed(range(depth))]
    return b"".join(opens) + b"1" + b"".join(closes)


@pytest.fixture
def log():
    return FakeEventLog()


@pytest.fixture
def client(log):
    app = build(
        Settings(hookrun_max_json_depth=64),
        parse_config(CONFIG, "test.yaml"),
        event_log=log,
        deliveries=FakeDeliveryIndex(),
    )
    with TestClient(app) as c:
        yield c


def launch(client, body: bytes):
    return client.post(
        "/api/v0/launch/gh/", content=body, headers={"X-Hub-Signature-256": github_sig(body)}
    )


@pytest.mark.parametrize("depth", [65, 254, 300])
def test_a_signed_body_nested_too_deep_gets_the_uniform_400_and_a_logged_reason(client, log, depth):
    r = launch(client, nested(depth))
    assert r.status_code == 400
    assert r.content == b'{"error":"launch rejected"}'
    assert not [e for e in log.events if isinstance(e, TriggerLaunched)]
    [entry] = [e for e in log.events if isinstance(e, TriggerLogged)]
    assert entry.outcome == "rejected"
    assert "HOOKRUN_MAX_JSON_DEPTH (64)" in entry.reason


@pytest.mark.parametrize("depth", [65, 100, 127])
def test_a_signed_body_nesting_arrays_and_objects_in_turn_too_deep_gets_the_uniform_400(
    client, log, depth
):
    r = launch(client, in_turn(depth))
    assert (r.status_code, r.content) == (400, b'{"error":"launch rejected"}')
    [entry] = [e for e in log.events if isinstance(e, TriggerLogged)]
    assert "HOOKRUN_MAX_JSON_DEPTH (64)" in entry.reason


def test_a_body_at_the_depth_limit_launches(client, log):
    assert launch(client, nested(64)).status_code == 202
    assert [e for e in log.events if isinstance(e, TriggerLaunched)]


def test_an_unsigned_deep_body_is_rejected_for_its_signature(client, log):
    r = client.post("/api/v0/launch/gh/", content=nested(300))
    assert r.status_code == 400
    [entry] = [e for e in log.events if isinstance(e, TriggerLogged)]
    assert "X-Hub-Signature-256" in entry.reason


def test_a_depth_limit_no_event_could_carry_is_refused_at_start():
    with pytest.raises(ValidationError, match="hookrun_max_json_depth"):
        Settings(hookrun_max_json_depth=250)
