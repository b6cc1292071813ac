"""Hostile launch and run-info requests against the gateway in-process, with the Fake adapters.

Properties: never a 5xx; a rejected launch appends no TriggerLaunched and exactly one
TriggerLogged with its reason; an accepted launch exactly one TriggerLaunched and nothing else;
an authenticated launch whose JSON nests deeper than HOOKRUN_MAX_JSON_DEPTH is rejected, and
the trigger log says so; run-info requests reach the status service unchanged (unless their
path holds a backslash) and append nothing.
"""

from __future__ import annotations

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st

from hookrun.config import parse_config
from hookrun.events import TriggerLaunched, TriggerLogged
from hookrun.events.limits import MAX_JSON_DEPTH
from hookrun.gateway.adapters import FakeDeliveryIndex, FakeEventLog
from hookrun.gateway.app import build
from hookrun.gateway.config import Settings
from hookrun.gateway.handlers import REJECTED_BODY
from tests.fuzz.strategies import CONFIG, Launch, fuzz, launches

LIMIT = 1024
LAUNCH_EXAMPLES = 6000
RUN_INFO_EXAMPLES = 1500


class Upstream:
    """The status service as an httpx.MockTransport that records what reached it."""

    def __init__(self) -> None:
        self.seen: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        return httpx.Response(200, json={"status": "pending", "result": []})


@pytest.fixture(scope="module")
def gateway():
    log, deliveries, upstream = FakeEventLog(), FakeDeliveryIndex(), Upstream()
    app = build(
        # One log entry per rejection is checked here: the flood sampling (fuzzed in
        # test_rejection_flood_fuzz.py) is set out of reach.
        Settings(hookrun_max_body_bytes=LIMIT, hookrun_rejection_log_limit=10**9),
        parse_config(CONFIG, "fuzz.yaml"),
        event_log=log,
        deliveries=deliveries,
        status_transport=httpx.MockTransport(upstream),
    )
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, log, deliveries, upstream


def _reset(log: FakeEventLog, deliveries: FakeDeliveryIndex, upstream: Upstream) -> None:
    log.events.clear()
    deliveries.seen.clear()
    upstream.seen.clear()


@fuzz(LAUNCH_EXAMPLES)
@given(launch=launches())
def test_a_launch_is_accepted_with_one_event_or_rejected_with_one_log_entry(
    gateway, launch: Launch
):
    client, log, deliveries, upstream = gateway
    _reset(log, deliveries, upstream)
    r = client.post(launch.url(), content=launch.body.data, headers=launch.all_headers())
    assert r.status_code < 500, (r.status_code, r.text)
    launched = [e for e in log.events if isinstance(e, TriggerLaunched)]
    logged = [e for e in log.events if isinstance(e, TriggerLogged)]
    authenticated = launch.signed or launch.trigger_id == "open"
    if len(launch.body.data) > LIMIT:
        assert r.status_code == 413
    elif authenticated and launch.body.depth <= MAX_JSON_DEPTH:
        assert r.status_code == 202, (r.status_code, r.text, launch.notes)
        [event] = launched
        assert logged == []
        assert event.trigger_id == launch.trigger_id
        assert event.request.body() == launch.body.data
        assert event.run_id in r.text or r.json() == {"ok": True}
        return
    else:
        assert (r.status_code, r.content) == (400, REJECTED_BODY), launch.notes
    assert launched == []
    [entry] = logged
    assert entry.outcome == "rejected"
    assert entry.reason
    assert entry.status_code == r.status_code
    assert entry.trigger_id == launch.trigger_id[:200]
    if authenticated and r.status_code == 400:
        # past the conditions, only the depth can refuse it
        assert launch.body.depth > MAX_JSON_DEPTH, launch.notes
        assert f"HOOKRUN_MAX_JSON_DEPTH ({MAX_JSON_DEPTH})" in entry.reason, entry.reason


@fuzz(RUN_INFO_EXAMPLES)
@given(launch=launches(), method=st.sampled_from(["GET", "POST"]), slash=st.booleans())
def test_run_info_reaches_the_status_service_unchanged_and_appends_nothing(
    gateway, launch: Launch, method: str, slash: bool
):
    client, log, deliveries, upstream = gateway
    _reset(log, deliveries, upstream)
    url = launch.url("run/" if slash else "run")
    r = client.request(method, url, content=launch.body.data, headers=launch.all_headers())
    assert r.status_code < 500, (r.status_code, r.text)
    assert log.events == []
    if "\\" in launch.trigger_id:
        # a backslash, escaped or not, is a separator to some servers: never forwarded
        assert r.status_code == 404
        assert upstream.seen == []
        return
    if len(launch.body.data) > LIMIT:
        assert r.status_code == 413
        assert upstream.seen == []
        return
    assert r.status_code == 200
    [forwarded] = upstream.seen
    assert forwarded.method == method
    assert forwarded.content == launch.body.data
    received: dict[bytes, list[bytes]] = {}
    for k, v in forwarded.headers.raw:
        received.setdefault(k.lower(), []).append(v)  # "S" and "s" may both be sent
    for name, value in launch.all_headers().items():
        if value.isascii():  # TestClient re-encodes other latin-1 values as UTF-8
            assert value in received.get(name.lower().encode(), []), name
